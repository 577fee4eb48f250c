"""Job leases: the worker that holds a running job ("host:pid") and when its lease expires (epoch seconds
on the database's clock). Jobs left running by the old code have no lease: the next claim settles them.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("worker", sa.Text))
    op.add_column("jobs", sa.Column("lease_expires", sa.Float))


def downgrade() -> None:
    op.drop_column("jobs", "lease_expires")
    op.drop_column("jobs", "worker")
