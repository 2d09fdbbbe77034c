"""Secure aggregation: masked inputs, kept only while their round is open (docs/design.md §5.1, §6.4).

Revision ID: 0005_secagg
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_secagg"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "masked_inputs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_masked_inputs_round_id_rounds")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_masked_inputs_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_masked_inputs")),
        sa.UniqueConstraint("round_id", "site_id", name=op.f("uq_masked_inputs_round_id_site_id")),
    )


def downgrade() -> None:
    op.drop_table("masked_inputs")
