"""The fine-tuning service: a FastAPI app (``app.py``), an SQLite + file store (``store.py``) and a training
worker in its own process (``worker.py``), supervised by the app (``supervisor.py``).

Data folder layout (``backsplit serve --data DIR``)::

    DIR/backsplit.db          SQLite (WAL): cases, jobs, models, settings (the current model), users and
                              their roles (token hashes only), the audit log -- unless --database names a
                              PostgreSQL database (``database.py``)
    DIR/store-id              names the database this folder belongs to (checked by every process)
    DIR/token                 the operator's API token, the admin ``operator`` (mode 0600) unless
                              --token-file names another file
    DIR/cases/<id>/           image.<ext>, label.<ext>, schema.json   (validated before they arrive here)
    DIR/models/<id>/          a run folder (model.json, model.safetensors, ...)
    DIR/jobs/<id>/            dataset/ (built from the cases), run/ (the engine's output), worker.log
    DIR/tmp/                  uploads being received; emptied on start

Everything that appears in a listing was written completely first (temporary name + rename, then the
database row), so a crash never leaves a half-written case or model visible.
"""

__all__ = ["Store"]


def __getattr__(name: str):
    # Lazy: the CLI imports server.limits at start-up and should not pay for SQLAlchemy there.
    if name == "Store":
        from BackSplitLib.server.store import Store

        return Store
    raise AttributeError(name)
