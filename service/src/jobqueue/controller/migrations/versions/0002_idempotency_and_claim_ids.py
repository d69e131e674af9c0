"""Idempotency keys of submits, and the worker's claim id on jobs.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from jobqueue.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("claim_id", sa.String(64), nullable=True))
        batch.create_index("ix_jobs_claim_id", ["claim_id"])


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claim_id")
        batch.drop_column("claim_id")
    op.drop_table("idempotency_keys")
