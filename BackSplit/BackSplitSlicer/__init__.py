"""Qt-free logic of the BackSplit Slicer module.

``panel``: the panel's behaviour (``PanelController``), bound by the Qt widget and by the browser app.
``roles``: segment roles stored in the ``BackSplit.Role`` tag. ``case``: volume + segments -> a training
case, and predictions -> segments. ``backends``: the fine-tuning service (remote, or a local server process)
behind one interface. ``install``: Local mode's packages. ``Widget`` alone holds Qt and imports Slicer's
application modules, so everything else runs against plain MRML (``slicer-core``) in tests.
"""
