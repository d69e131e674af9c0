"""Software environments: the one a job runs in, and those each worker offers.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("environment", sa.String(64), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("environments", sa.JSON, nullable=False,
                                   server_default="[]"))


def downgrade():
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("environments")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("environment")
