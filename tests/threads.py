"""Run a test's worker in many threads at once and fail the test with the first error any of them raised.

Example::

    run_in_threads(lambda i: model.predict(batches[i]), 8)
"""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(worker: Callable[[int], object], n: int) -> None:
    """Call ``worker(i)`` for i in 0..n-1, each in its own thread started together; re-raise the first error."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            worker(i)
        except BaseException as e:  # re-raised in the test's thread, where pytest sees it
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
