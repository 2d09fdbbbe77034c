"""Privacy ledger: updates.privacy (the site's ε, δ, σ, C, q, steps) and the budget_spent table.

Revision ID: 0004_privacy
Revises: 0003_failover
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_privacy"
down_revision = "0003_failover"  # after secure aggregation and failover, which reached main first
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("updates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("privacy", sa.JSON(), nullable=True))
    op.create_table(
        "budget_spent",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_budget_spent_run_id_runs")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_budget_spent_site_id_sites")),
        sa.PrimaryKeyConstraint("run_id", "site_id", name=op.f("pk_budget_spent")),
    )


def downgrade() -> None:
    op.drop_table("budget_spent")
    with op.batch_alter_table("updates", schema=None) as batch_op:
        batch_op.drop_column("privacy")
