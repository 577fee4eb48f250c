"""Projects (issue 24): one row per lesion task, and the project of every case, job and model.

Everything a store held before belongs to the ``default`` project: its rows get ``project = 'default'`` (the
column's server default, so existing rows are filled without being rewritten one by one), and the store's
current model (the ``current_model`` setting) becomes the default project's. The default project of such a
store has no label schema: it accepts any target, as the store did before.

Revision ID: 0003
Revises: 0002
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_PROJECT = "default"  # a revision keeps its own copy: the code's constant may change, this step may not
TABLES = ("cases", "jobs", "models")


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("schema", sa.Text),
        sa.Column("current_model", sa.Text),
    )
    connection = op.get_bind()
    settings = sa.table("settings", sa.column("key", sa.Text), sa.column("value", sa.Text))
    current = connection.execute(sa.select(settings.c.value).where(settings.c.key == "current_model")).scalar()
    op.bulk_insert(projects, [{"name": DEFAULT_PROJECT, "created": time.time(), "schema": None,
                               "current_model": current}])
    connection.execute(sa.delete(settings).where(settings.c.key == "current_model"))
    for table in TABLES:
        op.add_column(table, sa.Column("project", sa.Text, nullable=False, server_default=DEFAULT_PROJECT))
        op.create_index(f"{table}_project", table, ["project", "created"])


def downgrade() -> None:
    connection = op.get_bind()
    projects = sa.table("projects", sa.column("name", sa.Text), sa.column("current_model", sa.Text))
    others = connection.execute(sa.select(projects.c.name).where(projects.c.name != DEFAULT_PROJECT)).scalars().all()
    if others:  # their cases, jobs and models have no place in a store without projects: refuse, lose nothing
        raise RuntimeError(f"cannot downgrade below revision 0003: the store holds projects other than "
                           f"'{DEFAULT_PROJECT}' ({', '.join(sorted(others))})")
    current = connection.execute(sa.select(projects.c.current_model)
                                 .where(projects.c.name == DEFAULT_PROJECT)).scalar()
    if current is not None:
        settings = sa.table("settings", sa.column("key", sa.Text), sa.column("value", sa.Text))
        connection.execute(sa.insert(settings).values(key="current_model", value=current))
    for table in TABLES:
        op.drop_index(f"{table}_project", table_name=table)
        op.drop_column(table, "project")
    op.drop_table("projects")
