"""Initial registry schema: models, versions, aliases.

Revision ID: 0001
Revises:
Create Date: 2026-05-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "modelport_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_modelport_models"),
        sa.UniqueConstraint("name", name="uq_modelport_models_name"),
    )
    op.create_table(
        "modelport_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("runtime", sa.String(length=64), nullable=False),
        sa.Column("framework", sa.String(length=64), nullable=False),
        sa.Column("artifact", sa.String(length=80), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("environment", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("trusted_code", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["modelport_models.id"], name="fk_modelport_versions_model_id_modelport_models"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_modelport_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_modelport_versions_model_id"),
    )
    op.create_index("ix_modelport_versions_artifact", "modelport_versions", ["artifact"])
    op.create_table(
        "modelport_aliases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["modelport_models.id"], name="fk_modelport_aliases_model_id_modelport_models"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["modelport_versions.id"], name="fk_modelport_aliases_version_id_modelport_versions"
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_modelport_aliases"),
    )
    op.create_index("ix_modelport_aliases_version_id", "modelport_aliases", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_modelport_aliases_version_id", table_name="modelport_aliases")
    op.drop_table("modelport_aliases")
    op.drop_index("ix_modelport_versions_artifact", table_name="modelport_versions")
    op.drop_table("modelport_versions")
    op.drop_table("modelport_models")
