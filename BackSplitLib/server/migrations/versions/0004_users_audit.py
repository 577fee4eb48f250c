"""People (issue 24): users with a hashed token, their role per project, and the append-only audit log.

The audit table refuses UPDATE and DELETE with triggers, so no code path (nor a slip in psql or sqlite3)
rewrites history; only dropping the table can, which needs the database owner.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REFUSAL = "the audit log is append-only"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("admin", sa.Integer, nullable=False, server_default="0"),
        sa.Column("token_hash", sa.Text, unique=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("token_created", sa.Float),
        sa.Column("revoked", sa.Float),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_name", sa.Text, primary_key=True),
        sa.Column("project", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("object", sa.Text),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("outcome", sa.Integer, nullable=False),
    )
    op.create_index("audit_time", "audit", ["time"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                       BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$""")
        op.execute("CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_no_{event.lower()} BEFORE {event} ON audit "
                       f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_append_only ON audit")
        op.execute("DROP FUNCTION audit_append_only()")
    op.drop_table("audit")
    op.drop_table("user_roles")
    op.drop_table("users")
