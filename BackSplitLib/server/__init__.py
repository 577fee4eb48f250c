"""The fine-tuning service: a FastAPI app (``app.py``), an SQLite + file store (``store.py``) and a training
worker in its own process (``worker.py``), supervised by the app (``supervisor.py``).

Data folder layout (``backsplit serve --data DIR``)::

    DIR/backsplit.db          SQLite (WAL): cases, jobs, models, settings (the current model)
    DIR/token                 the API token (mode 0600) unless --token-file names another file
    DIR/cases/<id>/           image.<ext>, label.<ext>, schema.json   (validated before they arrive here)
    DIR/models/<id>/          a run folder (model.json, model.safetensors, ...)
    DIR/jobs/<id>/            dataset/ (built from the cases), run/ (the engine's output), worker.log
    DIR/tmp/                  uploads being received; emptied on start

Everything that appears in a listing was written completely first (temporary name + rename, then the
database row), so a crash never leaves a half-written case or model visible.
"""

from BackSplitLib.server.store import Store

__all__ = ["Store"]
