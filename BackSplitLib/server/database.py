"""The job database: one SQLAlchemy engine over SQLite (embedded default) or PostgreSQL, its tables, its
migrations (Alembic) and the one error the API turns into 503.

SQLite (``sqlite:///DATA/backsplit.db``) is one machine's store: WAL mode, and write transactions start with
``BEGIN IMMEDIATE`` so two writers never deadlock (SQLite serialises writers; readers use a deferred
``BEGIN`` and see a snapshot). PostgreSQL (``postgresql://...``, driven by psycopg 3) is the department's
store: several API processes and workers on several machines share it; row locks (``FOR UPDATE SKIP
LOCKED``) keep two workers from claiming one job. Connections are checked before use (``pool_pre_ping``),
so a database restart costs one failed request per stale connection at most, never a stuck process.

Schema changes are Alembic revisions in ``migrations/versions``; every process upgrades the database to
the newest revision when it opens it (under a lock, so two processes starting together migrate once). A
store written before Alembic (main's SQLite store, revision ``0001`` in content) is stamped ``0001`` and
upgraded in place: nothing is copied or lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (BigInteger, Column, Engine, Float, Index, Integer, MetaData, Table, Text, create_engine,
                        event, inspect, literal_column, text)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import DEFAULT_PROJECT
from BackSplitLib.vocabulary import DATABASE_ENV

DB_NAME = "backsplit.db"
BASELINE_REVISION = "0001"  # main's SQLite schema before Alembic: stores without a version table have it
CONNECT_TIMEOUT_S = 5  # an unreachable PostgreSQL host fails a request in seconds, not minutes
_MIGRATION_LOCK = 0x42_53_70_6C  # pg_advisory_xact_lock key ("BSpl"): one migrating process at a time

metadata = MetaData()


def _project_column() -> Column:
    """Revision 0003: the project a case, job or model belongs to (rows from before projects: the default)."""
    return Column("project", Text, nullable=False, server_default=DEFAULT_PROJECT)


# The current schema (the head revision), for queries. Revisions carry their own copy of each change.
# Revision 0003: one row per project (lesion task). ``schema`` is its label schema (JSON; NULL for the
# default project of a store from before projects, which accepts any target as it did); ``current_model``
# is the model its predictions use (before 0003: the ``current_model`` setting).
projects = Table(
    "projects", metadata,
    Column("name", Text, primary_key=True),
    Column("created", Float, nullable=False),
    Column("schema", Text),
    Column("current_model", Text),
)
cases = Table(
    "cases", metadata,
    Column("id", Text, primary_key=True),
    Column("created", Float, nullable=False),
    Column("name", Text, nullable=False),
    Column("image_file", Text, nullable=False),
    Column("label_file", Text, nullable=False),
    Column("schema", Text, nullable=False),
    Column("modality", Text, nullable=False),
    Column("size", Text, nullable=False),
    Column("spacing", Text, nullable=False),
    Column("classes", Text, nullable=False),
    Column("target_voxels", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    _project_column(),
    Index("cases_project", "project", "created"),
)
jobs = Table(
    "jobs", metadata,
    Column("id", Text, primary_key=True),
    Column("created", Float, nullable=False),
    Column("kind", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("cases", Text, nullable=False),
    Column("base_model", Text),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("total_iterations", Integer, nullable=False, server_default="0"),
    Column("loss", Float),
    Column("val_dice", Float),
    Column("eta_s", Float),
    Column("error", Text),
    Column("model_id", Text),
    Column("started", Float),
    Column("finished", Float),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("resume", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Integer, nullable=False, server_default="0"),
    Column("worker_pid", Integer),
    # Revision 0002: who holds a running job ("host:pid") and until when (database clock, epoch seconds).
    Column("worker", Text),
    Column("lease_expires", Float),
    _project_column(),
    Index("jobs_state", "state", "created"),
    Index("jobs_project", "project", "created"),
)
models = Table(
    "models", metadata,
    Column("id", Text, primary_key=True),
    Column("created", Float, nullable=False),
    Column("parent", Text),
    Column("job_id", Text),
    Column("source", Text, nullable=False),
    Column("schema", Text, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("cases", Text, nullable=False),
    _project_column(),
    Index("models_project", "project", "created"),
)
settings = Table(
    "settings", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text),
)
# Revision 0004: people (issue 24). A user's token is stored only as its SHA-256 (``accounts.hash_token``).
# The column is ``user_name``, not ``user``: in PostgreSQL a bare ``SELECT user`` is the session's role name,
# a trap for whoever reads the audit table with psql. Python calls it ``.c.user``.
users = Table(
    "users", metadata,
    Column("name", Text, primary_key=True),
    Column("admin", Integer, nullable=False, server_default="0"),  # an admin of every project
    Column("token_hash", Text, unique=True),
    Column("created", Float, nullable=False),
    Column("token_created", Float),
    Column("revoked", Float),  # set: the token no longer works (``users rotate`` issues a new one)
)
user_roles = Table(
    "user_roles", metadata,
    Column("user_name", Text, primary_key=True, key="user"),
    Column("project", Text, primary_key=True),
    Column("role", Text, nullable=False),
)
# Append-only (triggers refuse UPDATE and DELETE): who did or was refused what, never a token or image bytes.
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("user_name", Text, nullable=False, key="user"),
    Column("address", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("object", Text),
    Column("request", Text, nullable=False),  # method and route template, e.g. "DELETE /cases/{case_id}"
    Column("outcome", Integer, nullable=False),  # the HTTP status answered
    Index("audit_time", "time"),
)


class StoreUnavailable(BackSplitError):
    """The database cannot be reached or is busy: the API answers 503, workers retry with back-off."""


def sqlite_url(data: Path) -> str:
    return f"sqlite:///{Path(data).absolute() / DB_NAME}"


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def check_url(url: str) -> str:
    """The URL, or a BackSplitError that says which forms are accepted."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise BackSplitError(f"--database {describe_url(url)!s} is not a SQLite or PostgreSQL URL",
                             "use postgresql://USER@HOST:PORT/DBNAME (the password in ~/.pgpass or "
                             f"${DATABASE_ENV}), or leave it out for the data folder's SQLite file")
    return url


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's own default driver is psycopg2)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with this store's transaction rules (see the module docstring)."""
    url = _with_driver(check_url(url))
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, record) -> None:
            dbapi_connection.isolation_level = None  # the driver opens no transaction; _begin below does
            dbapi_connection.execute("PRAGMA busy_timeout=30000")
            dbapi_connection.execute("PRAGMA journal_mode=WAL")  # persistent; a no-op once the file is in WAL

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            readonly = connection.get_execution_options().get("backsplit_readonly", False)
            connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=10,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "backsplit"})


def is_unavailable(error: BaseException) -> bool:
    """A lost or refused connection, a busy SQLite file, an exhausted pool: worth retrying later."""
    if isinstance(error, PoolTimeout | OperationalError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


@contextmanager
def unavailable_as_store_error(url: str) -> Iterator[None]:
    """Turn the driver's connection errors into StoreUnavailable (the URL without its password)."""
    try:
        yield
    except (DBAPIError, PoolTimeout) as e:
        if not is_unavailable(e):
            raise
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise StoreUnavailable(f"the job database ({describe_url(url)}) cannot be reached or is busy: {reason}",
                               "try again in a moment; if it persists, check that the database server is "
                               "running") from e


# ---------------------------------------------------------------------- migrations
def migrations_config(connection: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = migrations_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the head revision, in one transaction that holds the database's write lock
    (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so concurrent starts migrate once."""
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        tables = set(inspect(connection).get_table_names())
        config = migrations_config(connection)
        if "alembic_version" not in tables and "jobs" in tables:
            command.stamp(config, BASELINE_REVISION)  # a store written before migrations existed
        if current_revision(connection) != head_revision():
            command.upgrade(config, "head")


def now_expression(connection: Connection):
    """The database's clock in epoch seconds: leases are compared on one clock, whatever the workers' clocks say."""
    if connection.dialect.name == "postgresql":
        return literal_column("extract(epoch from clock_timestamp())::float8", Float)
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)

