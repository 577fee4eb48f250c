"""BackSplit in the browser: trame-slicer's scene and segment editor, and the BackSplit panel bound to the
same Qt-free panel controller as the Slicer module. Started by ``backsplit web`` (extra ``[web]``).

``uploads``: streamed uploads, the engine's gate, bounded DICOM zips. ``security``: launch secret, Origin
and Host checks, one browser per process. ``login``: where the server token may come from. ``app``: the
trame application. ``page``: its layout. ``panel``: the binding of the panel controller to the page.
"""
