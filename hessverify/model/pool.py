"""Independent tasks of an assembly run side by side: one thread per core, each with single-threaded BLAS.

The graph's passes (:mod:`hessverify.model.assembly`) are many products of
modest size (a chunk of directions times a layer's patterns); OpenBLAS's own
threads do not pay on those, and on a busy machine its workers spin-wait after
each product and take the cores from everything else: the R-operator's block
rows of a small CNN measured 3 to 4 times slower with two BLAS threads than with
one under a load of 4 on two cores.  So BLAS is held to one thread
(threadpoolctl) and the independent chunks of directions run on as many threads
as BLAS was allowed; NumPy releases the GIL in its products, gathers and
elementwise loops.  The dense kernel (:mod:`hessverify.model.kernel`) follows
the same policy with its own pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

__all__ = ["PARALLEL_MIN_WORK", "blas_threads", "run_tasks"]

PARALLEL_MIN_WORK = 2.0**26
"""Work (about ``N W^2`` multiply-adds) below which tasks run inline with BLAS untouched (the pool and the
threadpoolctl scan cost more than they save)."""


@lru_cache(maxsize=1)
def _blas() -> Any:
    """NumPy's BLAS as threadpoolctl sees it, found once (a scan of the loaded libraries: about 2 ms)."""
    from threadpoolctl import ThreadpoolController  # here: it costs 35 ms to import, and only large problems ask

    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> int:
    """The threads BLAS may use now (``OPENBLAS_NUM_THREADS``, ``threadpool_limits``), at most one per core."""
    limits = [info["num_threads"] for info in _blas().info()]
    return max(1, min([os.cpu_count() or 1, *limits]))


def run_tasks(tasks: Sequence[Callable[[], None]], work: float, workers: int | None = None) -> None:
    """Run independent ``tasks`` (each writes its own part of a result); returns when all are done.

    ``work`` below :data:`PARALLEL_MIN_WORK`: inline, as they come.  Otherwise
    with BLAS at one thread, on ``workers`` threads (default
    :func:`blas_threads`; one runs them inline, still single-threaded).  A
    task's exception is raised here.
    """
    if work < PARALLEL_MIN_WORK:
        for task in tasks:
            task()
        return
    n = blas_threads() if workers is None else workers
    with _blas().limit(limits=1):
        if n <= 1 or len(tasks) <= 1:
            for task in tasks:
                task()
            return
        with ThreadPoolExecutor(min(n, len(tasks))) as pool:
            for future in [pool.submit(task) for task in tasks]:
                future.result()
