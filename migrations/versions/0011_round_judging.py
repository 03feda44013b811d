"""round judging: judge_runs.round_id, the run of an AI-labelled round's judging step (issue 16)

One nullable column (with its foreign key and index) on judge_runs; existing runs keep NULL
(project runs). Downgrading drops the column: the runs stay, no longer linked to their round.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("judge_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_judge_runs_round_id_training_rounds", "training_rounds", ["round_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index("ix_judge_runs_round_id", ["round_id"])


def downgrade() -> None:
    with op.batch_alter_table("judge_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_judge_runs_round_id")
        batch_op.drop_constraint("fk_judge_runs_round_id_training_rounds", type_="foreignkey")
        batch_op.drop_column("round_id")
