"""Hardening: a site's enrolled sample cap; audit rows count the refusals they stand for.

Revision ID: 0002_hardening
Revises: 0005_secagg
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_hardening"
down_revision = "0004_privacy"  # chained after secure aggregation, failover and privacy, which reached main first
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("max_samples", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("count", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("max_samples")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("count")
