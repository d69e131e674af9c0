"""Job arrays (one row per task, sharing the array's input) and dependencies between
jobs (`after`): the arrays and dependencies tables, and on jobs the task's array and
index and how many of its dependencies have not yet succeeded.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

from jobqueue.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "arrays",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("max_running", sa.Integer, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "dependencies",
        sa.Column("waiter", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.PrimaryKeyConstraint("waiter", "parent_id"),
    )
    op.create_index("ix_dependencies_parent_id", "dependencies", ["parent_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("array_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("array_index", sa.Integer, nullable=True))
        batch.add_column(sa.Column("waiting_on", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.create_foreign_key("fk_jobs_array_id", "arrays", ["array_id"], ["id"])
        batch.create_index("ix_jobs_array_state", ["array_id", "state"])


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_array_state")
        batch.drop_constraint("fk_jobs_array_id", type_="foreignkey")
        batch.drop_column("waiting_on")
        batch.drop_column("array_index")
        batch.drop_column("array_id")
    op.drop_index("ix_dependencies_parent_id", "dependencies")
    op.drop_table("dependencies")
    op.drop_table("arrays")
