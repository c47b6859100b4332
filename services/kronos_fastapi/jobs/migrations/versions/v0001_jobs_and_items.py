"""Revision 0001: the jobs and their items (statuses, leases, answers).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("input", sa.String(16), nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("started_at", utc),
        sa.Column("finished_at", utc),
        sa.Column("expires_at", utc),
    )
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.String(256), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text),
        sa.Column("response", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires_at", utc),
        sa.Column("started_at", utc),
        sa.Column("finished_at", utc),
    )
    op.create_index("ix_job_items_status", "job_items", ["job_id", "status"])
    op.create_index("ix_job_items_custom_id", "job_items", ["job_id", "custom_id"], unique=True)


def downgrade() -> None:
    op.drop_table("job_items")
    op.drop_table("jobs")
