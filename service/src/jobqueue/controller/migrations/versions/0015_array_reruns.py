"""Array reruns: an array made of another's unsuccessful tasks names that array and
keeps the size of the array first submitted.

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("arrays") as batch:
        batch.add_column(sa.Column("rerun_of", sa.String(32), nullable=True))
        batch.add_column(sa.Column("first_size", sa.Integer, nullable=True))


def downgrade():
    with op.batch_alter_table("arrays") as batch:
        batch.drop_column("first_size")
        batch.drop_column("rerun_of")
