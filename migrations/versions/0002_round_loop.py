"""round loop: heartbeat, claim, round prompts, one model per round and kind

What the training-round worker needs to be safe to run twice (docs/loop.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:08:29.806628
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models._types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "round_prompts",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("generated_at", app.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_round_prompts_prompt_id_prompts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["training_rounds.id"],
            name=op.f("fk_round_prompts_round_id_training_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", "prompt_id", name=op.f("pk_round_prompts")),
    )
    with op.batch_alter_table("round_prompts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_round_prompts_prompt_id"), ["prompt_id"], unique=False)
        batch_op.create_index("ix_round_prompts_round_batch", ["round_id", "batch"], unique=False)

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_model_versions_round_id_kind"), ["round_id", "kind"])

    with op.batch_alter_table("training_rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", app.models._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("claim_token", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_rounds", schema=None) as batch_op:
        batch_op.drop_column("claim_token")
        batch_op.drop_column("heartbeat_at")

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_model_versions_round_id_kind"), type_="unique")

    with op.batch_alter_table("round_prompts", schema=None) as batch_op:
        batch_op.drop_index("ix_round_prompts_round_batch")
        batch_op.drop_index(batch_op.f("ix_round_prompts_prompt_id"))

    op.drop_table("round_prompts")
