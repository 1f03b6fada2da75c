"""Training batches prepared in a background thread while the step runs (``data.prefetch``).

A data-loader worker process would copy the dataset and compete for the cores with its own
interpreter; a thread shares the process, and the parts of a batch's preparation that release
the GIL (PNG decoding, PIL resizing, numpy copies, torch ops) overlap the step's convolutions.
The batches are the same as without prefetching: each sample's augmentation draws from its own
generator (:func:`leanseg.data.transforms.sample_generator`), never from the global one that
the step's dropout uses.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

_DONE = object()


class Prefetcher:
    """Iterate ``source`` in a daemon thread, ``depth`` items ahead of the consumer.

    An exception raised by ``source`` is raised again by ``next()`` in the consumer. Call
    :meth:`close` (or use it as a context manager) to stop the thread early.
    """

    def __init__(self, source: Iterator[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="leanseg-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(err))
            return
        self._put(_DONE)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item it is preparing) and drop what it queued."""
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
