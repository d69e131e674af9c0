"""A worker's state beyond what it offers: the job slots it set aside (they could not
be cleaned), from its claims, and whether an admin drained it (it takes no new job).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("quarantined", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("drained", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("drained")
        batch.drop_column("quarantined")
