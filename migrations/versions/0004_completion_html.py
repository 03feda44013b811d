"""completions: the text's HTML, rendered when stored

Rendering markdown was the largest part of showing a task with real-sized completions (~1 ms for
a 600-character answer, 4–9 per task). text_html keeps the HTML made at ingestion and
html_renderer the app.markdown.RENDERER_VERSION that made it; rows from before stay NULL and are
rendered at display time as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("completions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_html", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("html_renderer", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("completions", schema=None) as batch_op:
        batch_op.drop_column("html_renderer")
        batch_op.drop_column("text_html")
