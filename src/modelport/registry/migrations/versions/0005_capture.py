"""Per-version payload-capture rate.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("modelport_versions") as batch:
        batch.add_column(sa.Column("capture_rate", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("modelport_versions") as batch:
        batch.drop_column("capture_rate")
