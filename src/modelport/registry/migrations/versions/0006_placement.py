"""Per-version device (cpu, cuda, cuda:N) and precision (fp16, bf16).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("modelport_versions") as batch:
        batch.add_column(sa.Column("device", sa.String(16), nullable=True))
        batch.add_column(sa.Column("precision", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("modelport_versions") as batch:
        batch.drop_column("precision")
        batch.drop_column("device")
