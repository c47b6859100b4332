"""Alembic's environment for the job store: always online, on the connection ``database.migrate``
passes in ``config.attributes["connection"]`` (inside its transaction, under its lock)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
