"""Alembic's environment: migrations run on the connection ``database.upgrade`` hands over (inside its
locked transaction), never on a URL of their own."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
