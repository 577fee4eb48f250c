"""Alembic migrations of the job database (run by ``database.upgrade``; see ``versions/``)."""
