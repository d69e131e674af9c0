"""The memory a worker offers its jobs in sum (MiB), from its claims: a job asking for
more than any worker has is refused (or held with that reason), as one asking for more
CPUs is.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("memory", sa.Integer, nullable=True))


def downgrade():
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("memory")
