"""Environment variables a job's submitter asked for (`--export NAME=VALUE`).

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("env", sa.JSON, nullable=False, server_default="{}"))


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("env")
