"""Traffic: weighted alias targets, alias history, shadows, and the change counter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-05-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "modelport_alias_splits",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["modelport_models.id"], name="fk_modelport_alias_splits_model_id_modelport_models"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["modelport_versions.id"], name="fk_modelport_alias_splits_version_id_modelport_versions"
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", "version_id", name="pk_modelport_alias_splits"),
    )
    op.create_index("ix_modelport_alias_splits_version_id", "modelport_alias_splits", ["version_id"])
    op.create_table(
        "modelport_alias_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["modelport_models.id"], name="fk_modelport_alias_history_model_id_modelport_models"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_modelport_alias_history"),
    )
    op.create_index("ix_modelport_alias_history_model_id", "modelport_alias_history", ["model_id", "alias"])
    op.create_table(
        "modelport_shadows",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("stats", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["modelport_models.id"], name="fk_modelport_shadows_model_id_modelport_models"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["modelport_versions.id"], name="fk_modelport_shadows_version_id_modelport_versions"
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", "version_id", name="pk_modelport_shadows"),
    )
    op.create_index("ix_modelport_shadows_version_id", "modelport_shadows", ["version_id"])
    changes = op.create_table(
        "modelport_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_modelport_changes"),
    )
    op.bulk_insert(changes, [{"id": 1, "serial": 0}])


def downgrade() -> None:
    op.drop_table("modelport_changes")
    op.drop_index("ix_modelport_shadows_version_id", table_name="modelport_shadows")
    op.drop_table("modelport_shadows")
    op.drop_index("ix_modelport_alias_history_model_id", table_name="modelport_alias_history")
    op.drop_table("modelport_alias_history")
    op.drop_index("ix_modelport_alias_splits_version_id", table_name="modelport_alias_splits")
    op.drop_table("modelport_alias_splits")
