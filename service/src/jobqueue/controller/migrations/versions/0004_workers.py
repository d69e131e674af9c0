"""The workers that have claimed jobs, with what each offers: so that a job no worker
could ever run is refused (or held with its reason) and queued jobs say why they wait.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from jobqueue.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "workers",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("jobs", sa.Integer, nullable=True),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )


def downgrade():
    op.drop_table("workers")
