"""A Dask cluster started by hand, as docs/campaigns.md tells a user to: ``dask scheduler`` and ``dask worker``.

Used by the campaign tests and by ``benchmarks/campaign_speedup.py``; each
process is started in a session of its own, so a test can kill one worker
(its nanny and its worker process together) without touching the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HandStarted", "hand_started"]

DASK = Path(sys.executable).with_name("dask")  # the venv's own: its workers import this hessverify


@dataclass
class HandStarted:
    """The scheduler's address and the ``dask worker`` processes (one session each)."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kill_worker(self, k: int) -> None:
        """SIGKILL worker ``k``, nanny and worker process together: a machine that dies."""
        os.killpg(self.workers[k].pid, signal.SIGKILL)
        self.workers[k].wait()


def _wait_for(path: Path, seconds: float) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.1)
    raise TimeoutError(f"the scheduler wrote no {path} within {seconds:g} s")


@contextmanager
def hand_started(directory: Path, n_workers: int = 2, *, timeout: float = 60.0) -> Iterator[HandStarted]:
    """``dask scheduler`` on a free local port and ``n_workers`` ``dask worker`` processes of one thread each."""
    from distributed import Client

    file = directory / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True, "env": env}
    scheduler = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(file)], **quiet)  # type: ignore[call-overload]
    cluster = HandStarted("", scheduler)
    try:
        cluster.address = str(_wait_for(file, timeout)["address"])
        for _ in range(n_workers):
            cluster.workers.append(subprocess.Popen(
                [str(DASK), "worker", cluster.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                 "--host", "127.0.0.1"], **quiet))  # type: ignore[call-overload]
        with Client(cluster.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=timeout)
        yield cluster
    finally:
        for p in [*cluster.workers, scheduler]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*cluster.workers, scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
