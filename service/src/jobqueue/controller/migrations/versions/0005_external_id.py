"""Each job's id in an external batch scheduler (the slurm backend's Slurm job id).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("jobs", sa.Column("external_id", sa.String(64), nullable=True))
    op.create_index("ix_jobs_external_id", "jobs", ["external_id"])


def downgrade():
    op.drop_index("ix_jobs_external_id", "jobs")
    op.drop_column("jobs", "external_id")
