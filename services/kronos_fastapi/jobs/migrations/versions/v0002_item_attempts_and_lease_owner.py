"""Revision 0002: how often an item was claimed (an item that took its instance down
``MAX_ATTEMPTS`` times fails instead of taking down the next one), which instance holds its lease,
and a job's final counts (kept once its items are deleted at expiry).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: SQLite does them in place (no table copy), and rows of 0001 read as 0 claims.
    op.add_column("job_items", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("job_items", sa.Column("lease_owner", sa.String(128)))
    op.add_column("jobs", sa.Column("final_counts", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("final_counts")
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("attempts")
