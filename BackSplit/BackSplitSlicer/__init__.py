"""Qt-free logic of the BackSplit Slicer module.

``roles``: segment roles stored in the ``BackSplit.Role`` tag. ``case``: volume + segments -> a training
case, and predictions -> segments. ``backends``: the fine-tuning service (remote, or a local server process)
behind one interface. ``Widget`` / ``Parameter`` hold the Qt panel and import Slicer's application
modules; nothing else here does, so the logic runs against plain MRML (``slicer-core``) in tests.
"""
