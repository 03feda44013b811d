"""rankings: index on (user_id, project_id) for the labeler's progress

The ranking page counts a labeler's rankings in the project on every render. With only the
single-column indexes Postgres combines user_id's with project_id's (a bitmap over every ranking of
the project) or reads each of the labeler's rankings from the table; this one answers the count
from the index alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rankings", schema=None) as batch_op:
        batch_op.create_index("ix_rankings_user_project", ["user_id", "project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rankings", schema=None) as batch_op:
        batch_op.drop_index("ix_rankings_user_project")
