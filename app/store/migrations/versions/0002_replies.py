"""Replies that outlive their connection: who writes a reply, its checkpoints, and stop requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as table:
        table.add_column(sa.Column("writer", sa.String(length=100), nullable=True))
        table.add_column(sa.Column("reasoning", sa.Text(), nullable=True))
        table.add_column(sa.Column("last_event", sa.Integer(), server_default="0", nullable=False))
        table.add_column(sa.Column("events", sa.Text(), nullable=True))
        table.add_column(sa.Column("error", sa.Text(), nullable=True))
        table.add_column(sa.Column("stop_requested", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("messages") as table:
        for column in ("stop_requested", "error", "events", "last_event", "reasoning", "writer"):
            table.drop_column(column)
