"""Failover and token rotation: the leader lease row (fencing token) and a site's previous token.

Revision ID: 0003_failover
Revises: 0005_secagg
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_failover"
down_revision = "0005_secagg"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leader_lease")),
    )
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_token_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("previous_token_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_sites_previous_token_hash"), ["previous_token_hash"])


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_sites_previous_token_hash"), type_="unique")
        batch_op.drop_column("previous_token_expires_at")
        batch_op.drop_column("previous_token_hash")
    op.drop_table("leader_lease")
