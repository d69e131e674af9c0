"""Tokens that expire.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

from jobqueue.models import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime, nullable=True))


def downgrade():
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires_at")
