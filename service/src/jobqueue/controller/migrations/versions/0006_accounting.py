"""What the attempt that finished a job used, as its worker measured it: CPU seconds,
peak memory (bytes), wall seconds and the signal that ended it.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cpu_seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("peak_memory", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("wall_seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("signal", sa.Integer, nullable=True))


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        for name in ("signal", "wall_seconds", "peak_memory", "cpu_seconds"):
            batch.drop_column(name)
