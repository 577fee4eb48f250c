"""One file per schema revision, oldest first: ``0001`` is main's SQLite schema before Alembic."""
