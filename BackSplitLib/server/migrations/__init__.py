"""Alembic migrations of the job database (run by ``database.upgrade``; see ``versions/``).

A schema change is a new file in ``versions/`` written by hand from the newest one (``revision`` and
``down_revision`` ids, ``upgrade``/``downgrade`` with ``op``), plus the same change in ``database.py``'s
tables; ``test_store.py`` checks that the migrated schema equals those tables on SQLite and PostgreSQL.
Only ``.py`` files live here: the Slicer extension bundles the engine's Python files and nothing else.
"""
