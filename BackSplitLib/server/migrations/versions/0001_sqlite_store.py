"""The store as main's SQLite code wrote it (before Alembic): cases, jobs, models, settings.

A database made by that code has exactly these tables and is stamped with this revision, not migrated.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("image_file", sa.Text, nullable=False),
        sa.Column("label_file", sa.Text, nullable=False),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("modality", sa.Text, nullable=False),
        sa.Column("size", sa.Text, nullable=False),
        sa.Column("spacing", sa.Text, nullable=False),
        sa.Column("classes", sa.Text, nullable=False),
        sa.Column("target_voxels", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("cases", sa.Text, nullable=False),
        sa.Column("base_model", sa.Text),
        sa.Column("iteration", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total_iterations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("loss", sa.Float),
        sa.Column("val_dice", sa.Float),
        sa.Column("eta_s", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("started", sa.Float),
        sa.Column("finished", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("resume", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker_pid", sa.Integer),
    )
    op.create_index("jobs_state", "jobs", ["state", "created"])
    op.create_table(
        "models",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("parent", sa.Text),
        sa.Column("job_id", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("cases", sa.Text, nullable=False),
    )
    op.create_table("settings", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text))


def downgrade() -> None:
    for table in ("settings", "models", "jobs", "cases"):
        op.drop_table(table)
