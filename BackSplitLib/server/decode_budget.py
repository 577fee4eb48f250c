"""How many voxel bytes the server decodes at once, across all requests (``--decode-budget``).

Each upload is bounded by ``--max-image-size``, but N uploads decoded at the same time cost N times that
(issue 19: each 2 MiB gzip declaring 800^3 float32 added 3.9 GiB). A request reserves the bytes its headers
declare before anything is decoded and gives them back when its images are no longer needed; while the
budget is full it waits up to ``DECODE_WAIT_S``, then is refused with 429 and a Retry-After (nothing was
done, so the client may simply send it again; BackSplitClient does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from BackSplitLib.image_files import format_bytes
from BackSplitLib.server.uploads import UploadError

DECODE_WAIT_S = 10.0  # a request waits this long for room before it is refused
RETRY_AFTER_S = 5


class DecodeBudget:
    """A byte budget shared by the request threads (``hold`` is a context manager)."""

    def __init__(self, total: int, wait_s: float = DECODE_WAIT_S):
        self.total = total
        self.wait_s = wait_s
        self.in_use = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int, what: str) -> Iterator[None]:
        """Reserve ``nbytes`` for the block; 413 when it can never fit, 429 when there is no room in time."""
        if nbytes > self.total:
            raise UploadError(413, f"{what} declares {format_bytes(nbytes)} of voxels to decode, more than this "
                                   f"server's decode budget of {format_bytes(self.total)} (--decode-budget)")
        deadline = time.monotonic() + self.wait_s
        with self._room:
            while self.in_use + nbytes > self.total:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UploadError(429, f"the server is decoding other uploads ({format_bytes(self.in_use)} of "
                                           f"{format_bytes(self.total)} in use); send {what} again in a few seconds",
                                      headers={"Retry-After": str(RETRY_AFTER_S)})
                self._room.wait(remaining)
            self.in_use += nbytes
        try:
            yield
        finally:
            with self._room:
                self.in_use -= nbytes
                self._room.notify_all()
