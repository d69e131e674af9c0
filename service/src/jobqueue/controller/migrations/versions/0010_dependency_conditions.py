"""Dependencies beyond "after it succeeded": the condition a parent must end in (ok,
any, notok) and whether its results are among the waiter's inputs.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("dependencies") as batch:
        batch.add_column(sa.Column("condition", sa.String(8), nullable=False,
                                   server_default="ok"))
        batch.add_column(sa.Column("inputs", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("dependencies") as batch:
        batch.drop_column("inputs")
        batch.drop_column("condition")
