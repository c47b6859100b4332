"""Where the job store lives and how it is opened and brought to the newest schema.

- **SQLite** by default: ``KRONOS_JOBS_DIR/jobs.sqlite3``, in WAL mode (readers never wait for the
  writer), ``synchronous=FULL`` (a committed job survives a crash of the process and of the machine),
  a 30 s busy timeout, foreign keys on. Every write transaction is ``BEGIN IMMEDIATE``: it takes the
  write lock when it starts, so two writers never deadlock upgrading a read lock.
- **Postgres** when ``KRONOS_JOBS_DATABASE_URL=postgresql://…`` (psycopg 3; ``postgres://`` and
  ``postgresql://`` are rewritten to ``postgresql+psycopg://``): one database shared by every replica.
- **Migrations** (Alembic, ``migrations/``) run at start-up with a ``Config`` built here (no
  alembic.ini): a newer service upgrades an older database in place, in one transaction, under a
  lock (Postgres: an advisory lock; SQLite: the write lock), so replicas starting together migrate
  once. A database newer than this service (a rollback) is refused with the revisions named.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text

SQLITE_FILE = "jobs.sqlite3"
MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key of the migrations: "KRONOS" in ASCII.
_MIGRATION_LOCK = 0x4B524F4E4F53
# Write transactions run with this execution option (SQLite: BEGIN IMMEDIATE).
WRITE = {"kronos_write": True}


class SchemaError(RuntimeError):
    """The database's schema is one this service cannot use (e.g. newer than it)."""


def database_url(url: str | None, jobs_dir: Path) -> str:
    """The SQLAlchemy URL of the store: ``url`` with the psycopg 3 driver named, or SQLite in ``jobs_dir``."""
    if url is None:
        return f"sqlite:///{(jobs_dir / SQLITE_FILE).expanduser().resolve()}"
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def redacted(url: str) -> str:
    """The URL without its password, for logs and readyz."""
    return make_url(url).render_as_string(hide_password=True)


def open_engine(url: str) -> Engine:
    """An engine for the store's URL (the SQLite file's folder is created)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args={"connect_timeout": 5})
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver issues no BEGIN of its own; _begin below does
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        immediate = connection.get_execution_options().get("kronos_write")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> str:
    """Bring the schema to ``revision`` (default: the newest); returns the revision the database is at."""
    config = _config()
    script = ScriptDirectory.from_config(config)
    with engine.execution_options(**WRITE).connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        else:
            connection.execute(text("SELECT 1"))  # takes SQLite's write lock (BEGIN IMMEDIATE)
        found = MigrationContext.configure(connection).get_current_revision()
        if found is not None and not _known(script, found):
            raise SchemaError(
                f"the job database is at schema revision {found}, which this service does not know (its newest "
                f"is {script.get_current_head()}): it was written by a newer version of the service"
            )
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()
    return current_revision(engine) or ""


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 — alembic raises its own errors for unknown ids
        return False
