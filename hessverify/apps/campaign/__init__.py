"""``hessverify campaign KIND``: the suite's large measurements, spread over a Dask cluster.

A campaign is a numbered set of units (a problem of the false-alarm study, a
shipped case under every planted bug, one seed of a sweep or of a library's
conformance run); unit ``i`` is derived from ``(seed, i)`` and the options
alone (:attr:`Plan.options`), so what a campaign finds does not depend on how
many workers ran it, nor in what order, and equals a one-process run
(:meth:`Plan.run_here`) record for record.

:func:`run_campaign` sends the units in batches to the workers of a local
cluster (``--workers N``: processes with one thread each, BLAS pinned to one
thread) or of an existing scheduler (``--scheduler tcp://HOST:PORT``),
collects the outcomes as they come back, and writes them every
``--checkpoint`` seconds into the ``results.json`` of ``--json FILE`` (the
records of ``hessverify verify --json``, :func:`hessverify.reports.results_document`,
plus a ``campaign`` object: the kind, the options, and one entry per unit
done).  Nothing is lost: a task whose worker dies is run again elsewhere
(Dask's retries), and ``--resume FILE`` starts again from a campaign's
partial file, skipping the units it holds and never repeating one.

Dask is the optional extra ``hessverify[distributed]``; ``import hessverify``
does not import it, and without it the command says so in one line (exit 2).
The kinds are in :mod:`hessverify.apps.campaign.kinds`; docs/campaigns.md shows
how to run them locally, on an existing cluster and on a batch system.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from hessverify.engine.budget import format_duration
from hessverify.engine.compare import Comparison
from hessverify.errors import HessverifyError, UsageError, exception_line

__all__ = [
    "CONNECT_TIMEOUT",
    "ClusterError",
    "Outcome",
    "Plan",
    "check_scheduler_address",
    "default_workers",
    "load_resume",
    "need_dask",
    "run_campaign",
    "record_fault",
    "seed_alone_decides",
    "work_batch",
]

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for ``--scheduler`` to answer before saying it cannot be reached."""

SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
"""Address schemes of a Dask scheduler that ``--scheduler`` accepts."""

RETRIES = 3
"""How often a batch that raised is tried again (a worker that dies is Dask's own affair: its tasks are
rescheduled, up to ``distributed.scheduler.allowed-failures`` times)."""


@dataclass
class Outcome:
    """What one unit of a campaign found.

    ``records`` are its comparisons as ``results.json`` holds them,
    ``not_compared`` its ``{"case", "reason", "message"}`` records, ``extra``
    what the kind keeps of it besides (JSON values only).
    """

    index: int
    id: str
    records: list[Comparison] = field(default_factory=list)
    not_compared: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The unit's entry in ``campaign.units`` (its records are counted, and kept in ``results``)."""
        return {"index": self.index, "id": self.id, "records": len(self.records),
                "not_compared": len(self.not_compared), **self.extra}


@dataclass
class Plan:
    """A campaign, decided before any work: what to run, how much, and how to finish.

    ``options`` decide the units (a resume file must carry the same);
    ``work(options, indices)`` is a module-level function (workers import it
    by name) returning one :class:`Outcome` per index; ``finish(plan,
    outcomes, seconds, out, err)`` prints the result and returns the exit
    status and the summary kept in the JSON; ``report(plan, outcomes,
    directory, err)`` writes ``--report DIR``.  ``unit_seconds`` and
    ``unit_memory`` are estimates of the largest unit, checked before work;
    ``settings`` are options that change no unit's outcome (a resume may differ in them).
    """

    kind: str
    options: dict[str, Any]
    size: int
    work: Callable[[dict[str, Any], list[int]], list[Outcome]]
    finish: Callable[[Plan, list[Outcome], float, TextIO, TextIO], tuple[int, dict[str, Any]]]
    unit_seconds: float
    unit_memory: int
    noun: str = "problems"
    report: Callable[[Plan, list[Outcome], Path, TextIO], None] | None = None
    batch: int | None = None  # units per task; None: a few tasks per worker
    settings: dict[str, Any] = field(default_factory=dict)  # options that change no unit (where to save, ...)

    def run_here(self, indices: Sequence[int] | None = None) -> list[Outcome]:
        """The units in this process, one after the other: the one-process run a campaign equals."""
        return work_batch(self.work, self.options, list(range(self.size) if indices is None else indices))


def work_batch(work: Callable[[dict[str, Any], list[int]], list[Outcome]], options: dict[str, Any],
               indices: list[int]) -> list[Outcome]:
    """Run ``work`` on ``indices`` as a worker does: BLAS on one thread, floating-point warnings quiet.

    One thread per worker process, so that two workers on two cores do not
    oversubscribe them, and so that a result never depends on how a library
    split a sum between threads.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    from hessverify.reports.progress import quiet

    # no bars from a worker: a local cluster's workers share the terminal with the campaign's own bar
    with threadpool_limits(limits=1), np.errstate(all="ignore"), warnings.catch_warnings(), \
            seed_alone_decides(), quiet():
        warnings.simplefilter("ignore", RuntimeWarning)
        # a Dask worker's own threads use the random module (heartbeat jitter) while Hypothesis draws; Hypothesis
        # takes that for a strategy using it. Its draws come from its own generator, seeded per run: no effect.
        warnings.filterwarnings("ignore", "Do not use the `random` module inside strategies")
        return work(options, indices)


@contextmanager
def seed_alone_decides() -> Iterator[None]:
    """Hypothesis's draws decided by the seed alone while a unit runs.

    Hypothesis (6.13x on) mixes literals of the *local* modules loaded in the
    process (an editable hessverify's, the user's) into what it draws, so a
    seed draws other problems once another module is loaded: a worker that
    ran one unit would draw differently for the next.  Here that pool is
    empty, so unit ``i`` draws the same in any worker, after any other unit,
    and in :meth:`Plan.run_here`.  (Without the private hook, a newer
    Hypothesis, this changes nothing.)
    """
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - Hypothesis is a core dependency
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()

    def forget() -> None:  # values filtered from an earlier pool are cached: not from this one
        cache = getattr(providers, "CONSTANTS_CACHE", None)
        if cache is not None and hasattr(cache, "cache"):
            cache.cache.clear()

    providers._get_local_constants = lambda: empty
    forget()
    try:
        yield
    finally:
        providers._get_local_constants = original
        forget()


# -- Dask ---------------------------------------------------------------------------------------------------


def need_dask() -> Any:
    """``distributed``, or a one-line :class:`UsageError` saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError("campaign needs Dask, which is not installed; pip install 'hessverify[distributed]'") from None
    return distributed


def default_workers() -> int:
    """The number of cores this process may use: ``--workers``'s default."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_scheduler_address(address: str) -> str:
    """``address`` if it reads as a scheduler's ``tcp://HOST:PORT``, else a one-line :class:`UsageError`.

    Examples
    --------
    >>> check_scheduler_address("tcp://10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    >>> check_scheduler_address("10.0.0.5")
    Traceback (most recent call last):
    ...
    hessverify.errors.UsageError: --scheduler '10.0.0.5': give the address the scheduler prints, tcp://HOST:PORT
    """
    hint = f"--scheduler {address!r}: give the address the scheduler prints, tcp://HOST:PORT"
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        raise UsageError(hint) from None
    if parts.scheme not in SCHEMES or not parts.hostname or port is None or not 0 < port < 65536 \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(hint)
    return address


@contextmanager
def _client(workers: int | None, scheduler: str | None, err: TextIO) -> Iterator[Any]:
    """A Dask client: on ``scheduler``, or on a local cluster of ``workers`` processes; closed on the way out."""
    import logging

    distributed = need_dask()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            reason = exception_line(exc) or type(exc).__name__
            raise UsageError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there within "
                             f"{CONNECT_TIMEOUT:g} s ({reason}); is 'dask scheduler' running?") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = default_workers() if workers is None else workers
    # processes, not threads: the work is NumPy and Python under the GIL; one thread each, and BLAS pinned
    # to one thread before the worker imports NumPy (Dask's own pre-spawn environment does the same)
    with _sigint_ignored():
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                           silence_logs=logging.CRITICAL,
                                           env={v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                 "MKL_NUM_THREADS")})
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


POLL = 0.05
"""Seconds between looks at the finished tasks (and at a signal noted meanwhile)."""


class _Caught:
    """SIGINT and SIGTERM noted while the campaign runs, raised where it is safe: between batches."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def note(self, signum: int, frame: object) -> None:
        self.signum = signum

    def check(self) -> None:
        """Raise the interrupt noted, as the command line would have: KeyboardInterrupt, or its SIGTERM handler."""
        import signal

        if self.signum is None:
            return
        signum, self.signum = self.signum, None
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, None)  # the command line's SIGTERM raises its own termination
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


@contextmanager
def _signals_noted() -> Iterator[_Caught]:
    """Note SIGINT and SIGTERM instead of raising them wherever the main thread is.

    A KeyboardInterrupt raised inside Dask's own callbacks (its garbage-collection
    timer, its event loop) is swallowed there and the campaign would run on;
    noted, it is raised between batches, after which the partial results are
    written and the cluster shut down with the handler still in place, so a
    second Ctrl-C cannot cut that short.  Local workers are started with SIGINT
    ignored, so a Ctrl-C at a terminal (sent to the whole process group)
    reaches this process only, which then shuts them down.
    """
    import signal
    import threading

    caught = _Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    for s in (signal.SIGINT, signal.SIGTERM):
        caught.previous[s] = signal.getsignal(s)
        signal.signal(s, caught.note)
    try:
        yield caught
    finally:
        for s, handler in caught.previous.items():
            signal.signal(s, handler)
    if caught.signum is not None:  # a signal during the cluster's shutdown
        caught.check()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes are spawned: they inherit it (a Ctrl-C is for the campaign)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the results file ---------------------------------------------------------------------------------------


def _document(plan: Plan, outcomes: dict[int, Outcome], complete: bool, summary: dict[str, Any] | None,
              seconds: float) -> dict[str, Any]:
    """``results.json``: the records of ``verify --json`` in unit order, and the ``campaign`` object."""
    from hessverify.reports import results_document

    ordered = [outcomes[i] for i in sorted(outcomes)]
    doc = results_document([c for o in ordered for c in o.records], [s for o in ordered for s in o.not_compared])
    doc["campaign"] = {"kind": plan.kind, "options": plan.options, "size": plan.size, "noun": plan.noun,
                       "done": len(ordered), "complete": complete, "seconds": round(seconds, 1),
                       "summary": summary, "units": [o.entry() for o in ordered]}
    return doc


def _write(path: Path, plan: Plan, outcomes: dict[int, Outcome], complete: bool,
           summary: dict[str, Any] | None, seconds: float) -> None:
    from hessverify.io.files import strict_json, write_output

    write_output(path, strict_json(_document(plan, outcomes, complete, summary, seconds), indent=1), option="--json")


def load_resume(path: Path, plan: Plan) -> dict[int, Outcome]:
    """The units a campaign's ``results.json`` already holds, checked to be this campaign's.

    One-line :class:`UsageError` for a file that cannot be read, is not a
    campaign's results (any part of the wrong type), is another campaign's
    (kind, seed or any option that decides the units differs), holds units
    past ``plan.size``, or holds a record that contradicts itself
    (:func:`record_fault`: a verdict its own numbers do not give, a number
    that is not one).
    """
    from hessverify.io.files import read_case_text

    try:
        text = read_case_text(path, limit=2**34)
    except Exception as exc:  # a CaseError naming the path: said as a --resume fault
        raise UsageError(f"--resume {path}: cannot be read: {getattr(exc, 'message', exc)}") from None
    foreign = UsageError(f"--resume {path}: is not the results.json of a hessverify campaign "
                         "(written by 'hessverify campaign ... --json')")
    try:
        doc = json.loads(text)
        camp = doc["campaign"]
        kind, options, units = camp["kind"], camp["options"], camp["units"]
        results, skipped = doc["results"], doc["not_compared"]
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError):
        raise foreign from None
    for value, kind_of in ((kind, str), (options, dict), (units, list), (results, list), (skipped, list)):
        if not isinstance(value, kind_of):
            raise foreign
    if kind != plan.kind:
        raise UsageError(f"--resume {path}: holds a {kind} campaign, not {plan.kind}")
    ours = json.loads(json.dumps(plan.options))  # as they would read back from JSON
    differ = sorted(k for k in set(options) | set(ours) if options.get(k) != ours.get(k))
    if differ:
        said = ", ".join(f"--{k.replace('_', '-')} {options.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        raise UsageError(f"--resume {path}: is from a different campaign ({said}); resume with the same options")
    done: dict[int, Outcome] = {}
    at, skip_at = 0, 0
    edited = UsageError(f"--resume {path}: its campaign units do not match its records; the file was edited")
    for u in units:
        if not isinstance(u, dict):
            raise edited
        try:
            index, n, m = _count(u["index"]), _count(u["records"]), _count(u["not_compared"])
            extra = {k: v for k, v in u.items() if k not in ("index", "id", "records", "not_compared")}
            records = results[at:at + n]
            if len(records) != n or len(skipped[skip_at:skip_at + m]) != m:
                raise edited
            for k, r in enumerate(records):
                fault = record_fault(r)
                if fault is not None:
                    raise UsageError(f"--resume {path}: result {at + k} (unit {index}) contradicts itself: {fault}; "
                                     "the file was edited or damaged, start the campaign again without --resume")
            outcome = Outcome(index, str(u["id"]), [Comparison.from_dict(r) for r in records],
                              list(skipped[skip_at:skip_at + m]), extra)
        except UsageError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError):
            raise edited from None
        if not 0 <= index < plan.size:
            raise UsageError(f"--resume {path}: holds unit {index}, past the {plan.size} {plan.noun} asked for")
        if index in done:
            raise UsageError(f"--resume {path}: holds unit {index} twice; the file was edited")
        done[index] = outcome
        at, skip_at = at + n, skip_at + m
    if at != len(results) or skip_at != len(skipped):
        raise edited
    return done


def _count(value: Any) -> int:
    """A whole number at least 0 as JSON holds it (not a bool, not a float, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


_TEXT_FIELDS = ("case", "method", "reference", "bound_kind", "note")
_NUMBER_FIELDS = ("max_abs_error", "max_rel_error", "frobenius_rel_error", "bound", "margin", "symmetry_error")
_UNJUDGED = ("approximation", "not_applicable")
"""Kinds of record that are no comparison against a bound: they always pass, whatever their numbers."""


def record_fault(record: Any) -> str | None:
    """What is wrong with one ``results.json`` record, judged by itself alone; ``None`` when it is consistent.

    Types: text fields are strings, ``passed`` a bool, counts whole numbers
    at least 0, errors, bounds and margins numbers at least 0 (``null``: not
    finite).  Verdict and numbers: a record passes exactly when it has no
    failing entries, and a comparison against a bound passes exactly when its
    margin (``|error| / bound`` at the worst entry) is at most 1; a failing
    comparison has a nonzero error; a record that is no comparison
    (approximation, not applicable) always passes.

    >>> ok = {"case": "c", "method": "m", "reference": "r", "passed": True, "max_abs_error": 1e-17,
    ...       "max_rel_error": 1e-16, "frobenius_rel_error": 1e-16, "bound": 1e-15, "bound_kind": "rounding",
    ...       "margin": 0.01, "symmetry_error": 0.0, "failing_entries": 0, "unchecked_entries": 0, "note": "",
    ...       "worst_entry": {"row": "W1[0,0]", "col": "b1[0]", "value": 1.0, "reference_value": 1.0,
    ...                       "abs_error": 1e-17, "bound": 1e-15}, "extra": {}}
    >>> record_fault(ok) is None
    True
    >>> record_fault({**ok, "passed": False, "failing_entries": 1, "max_abs_error": 0.0, "margin": 2.0})
    'it fails (1 entries over the bound) with an error of 0'
    """
    if not isinstance(record, dict):
        return f"it is a {type(record).__name__}, not a record"
    for name in _TEXT_FIELDS:
        if not isinstance(record.get(name, ""), str) or name != "note" and name not in record:
            return f"{name} is {record.get(name)!r}, not text"
    passed = record.get("passed")
    if not isinstance(passed, bool):
        return f"passed is {passed!r}, not true or false"
    for name in _NUMBER_FIELDS:
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            return f"{name} is {value!r}, not a number at least 0"
    for name in ("failing_entries", "unchecked_entries"):
        value = record.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name} is {value!r}, not a whole number at least 0"
    worst = record.get("worst_entry")
    if not isinstance(worst, dict):
        return f"worst_entry is {worst!r}, not a record of the worst entry"
    for name in ("row", "col"):
        if not isinstance(worst.get(name), str):
            return f"worst_entry.{name} is {worst.get(name)!r}, not a parameter name"
    for name in ("value", "reference_value", "abs_error", "bound"):
        value = worst.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"worst_entry.{name} is {value!r}, not a number"
    failing = record.get("failing_entries", 0)
    if passed != (failing == 0):
        return (f"it {'passes' if passed else 'fails'} with {failing} entries over the bound")
    if record["bound_kind"] in _UNJUDGED:
        return None if passed else f"a {record['bound_kind']} record cannot fail"
    if record["bound_kind"] == "none":  # nothing was compared: no numbers to hold the verdict to
        return None
    margin, error = record.get("margin"), record.get("max_abs_error")
    if passed and margin is not None and margin > 1:
        return f"it passes with a margin of {margin!r} (over 1: the error is past its bound)"
    if not passed and margin is not None and margin <= 1:
        return f"it fails with a margin of {margin!r} (at most 1: the error is within its bound)"
    if not passed and error == 0:
        return f"it fails ({failing} entries over the bound) with an error of 0"
    return None


# -- the run ------------------------------------------------------------------------------------------------


def _batches(todo: list[int], size: int) -> list[list[int]]:
    return [todo[k:k + size] for k in range(0, len(todo), size)]


class ClusterError(HessverifyError):
    """The cluster failed under the campaign: its scheduler went away, or a batch killed worker after worker."""


def _next_batch(finished: Any, json_path: Path | None) -> list[Any]:
    """The batches finished since the last look; a failure of the cluster as one line, not a traceback.

    A batch that raised one of hessverify's errors (a worker without torch when
    torch was asked for) is that error; anything else the cluster raises
    (``KilledWorker`` after a batch killed ``allowed-failures`` workers, a lost
    scheduler cancelling every task) is a :class:`ClusterError`.
    """
    import asyncio

    try:
        return list(finished.next_batch(block=False))
    except HessverifyError:
        raise
    except (Exception, asyncio.CancelledError) as exc:
        said = exception_line(exc)
        keep = f"; the units done are in {json_path}, go on with --resume {json_path}" if json_path else ""
        raise ClusterError(f"the Dask cluster failed: {type(exc).__name__}{': ' + said if said else ''}{keep}") from None


def _check_time(plan: Plan, units: int, n_workers: int, max_time: float | None) -> float:
    """The estimated seconds of ``units`` on ``n_workers``; past ``max_time`` (if > 0), a one-line error."""
    estimate = plan.unit_seconds * units / max(n_workers, 1)
    if max_time is not None and max_time > 0 and estimate > max_time:
        raise UsageError(f"the campaign would take about {format_duration(estimate)} (at most {plan.unit_seconds:.2g} s for "
                         f"each of {units} {plan.noun} on {max(n_workers, 1)} worker(s)), more than the --max-time "
                         f"of {format_duration(max_time)}; raise --max-time or give more workers")
    return estimate


def run_campaign(plan: Plan, *, workers: int | None = None, scheduler: str | None = None,
                 json_path: Path | None = None, report_dir: Path | None = None, resume: Path | None = None,
                 checkpoint: float = 10.0, batch: int | None = None, max_time: float | None = None,
                 out: TextIO | None = None, err: TextIO | None = None, show_progress: bool | None = None) -> int:
    """Run ``plan`` on a Dask cluster (module text); return the kind's exit status.

    Every fault of the input is a one-line :class:`UsageError` raised before
    any work: Dask missing, ``workers < 1``, both ``workers`` and
    ``scheduler``, a malformed or unreachable ``scheduler``, an unreadable
    or foreign ``resume`` file, an output that cannot be written, work
    estimated past ``max_time`` seconds or past the memory budget.  With
    ``resume`` and no ``json_path``, the results go back into ``resume``.
    An interrupt (``KeyboardInterrupt``, or the command line's SIGTERM)
    writes the units done so far into ``json_path`` (a valid file to resume
    from), shuts the cluster down, and propagates.
    """
    from hessverify.io.files import check_output_path, claim_output

    out = out or sys.stdout
    err = err or sys.stderr
    distributed = need_dask()
    # resolved once, now: the paths mean what they meant when the campaign started, whatever runs later
    json_path, report_dir, resume = (Path(os.path.abspath(p)) if p is not None else None
                                     for p in (json_path, report_dir, resume))
    if workers is not None and scheduler is not None:
        raise UsageError("--workers and --scheduler: give one (--workers starts a local cluster, --scheduler uses "
                         "an existing one)")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give at least 1")
    if scheduler is not None:
        check_scheduler_address(scheduler)
    if batch is not None and batch < 1:
        raise UsageError(f"--batch {batch}: give at least 1")
    if not (checkpoint >= 0 and math.isfinite(checkpoint)):
        raise UsageError(f"--checkpoint {checkpoint}: give seconds, at least 0")
    done = load_resume(resume, plan) if resume is not None else {}
    if json_path is None and resume is not None:
        json_path = resume
    if json_path is not None:
        if json_path.suffix.lower() != ".json" and not (json_path.exists() and not json_path.is_file()):
            raise UsageError(f"--json {json_path}: the file must end in .json")
        check_output_path(json_path, "--json")
    if report_dir is not None:
        if plan.report is None:
            raise UsageError(f"--report: a {plan.kind} campaign writes no report; use --json")
        from hessverify.reports import check_directory

        check_directory(report_dir)
    with contextlib.ExitStack() as held:  # two campaigns on one --json (or --report, --save): the second stops here
        if json_path is not None:
            held.enter_context(claim_output(json_path, "--json" if json_path != resume else "--resume"))
        if report_dir is not None:
            held.enter_context(claim_output(report_dir, "--report", directory=True))
        save = plan.settings.get("save")
        if save:
            held.enter_context(claim_output(Path(save), "--save", directory=True))
        return _run_held(plan, distributed, workers, scheduler, json_path, report_dir, resume, done, checkpoint,
                         batch, max_time, out, err, show_progress)


def _run_held(plan: Plan, distributed: Any, workers: int | None, scheduler: str | None, json_path: Path | None,
              report_dir: Path | None, resume: Path | None, done: dict[int, Outcome], checkpoint: float,
              batch: int | None, max_time: float | None, out: TextIO, err: TextIO,
              show_progress: bool | None) -> int:
    """:func:`run_campaign` once its input is checked and its outputs are held."""
    from hessverify.engine.budget import current_limit, format_size
    from hessverify.reports.progress import progress

    todo = [i for i in range(plan.size) if i not in done]
    n_workers = default_workers() if workers is None and scheduler is None else (workers or 0)
    if plan.unit_memory > current_limit():
        raise UsageError(f"one of the {plan.noun} of this campaign would need about {format_size(plan.unit_memory)} "
                         f"of memory per worker, more than the budget of {format_size(current_limit())}; "
                         "raise --max-memory")
    estimate = _check_time(plan, len(todo), n_workers, max_time) if scheduler is None else 0.0

    outcomes: dict[int, Outcome] = dict(done)
    start = time.perf_counter()
    complete = False
    with _signals_noted() as caught, _client(workers, scheduler, err) as client:
        if scheduler is not None:  # the workers it has now; more may join while the campaign runs
            n_workers = len(client.scheduler_info().get("workers", {}))
            estimate = _check_time(plan, len(todo), n_workers, max_time)
        where = f"{n_workers} local worker(s)" if scheduler is None else f"{scheduler} ({n_workers} worker(s) now)"
        print(f"hessverify campaign {plan.kind}: {len(todo)} of {plan.size} {plan.noun} to run"
              + (f" ({len(done)} already in {resume})" if done else "")
              + f" on {where}; estimated at most {format_duration(estimate)}", file=err)
        # small enough that the last batches end together (no worker idles long at the end), large enough that
        # Dask's few milliseconds a task do not count
        size = batch or plan.batch or max(1, min(25, math.ceil(len(todo) / (16 * max(n_workers, 1)))))
        token = uuid.uuid4().hex[:12]
        futures = [client.submit(work_batch, plan.work, plan.options, b, key=f"hessverify-{plan.kind}-{token}-{b[0]}",
                                 retries=RETRIES, pure=False) for b in _batches(todo, size)]
        last = time.monotonic()
        try:
            with progress(len(todo), f"campaign {plan.kind}", enabled=show_progress) as tick:
                finished = distributed.as_completed(futures, loop=client.loop, with_results=True)
                while not finished.is_empty():
                    caught.check()
                    ready = _next_batch(finished, json_path)
                    if not ready:
                        time.sleep(POLL)
                        continue
                    for _, batch_outcomes in ready:
                        for o in batch_outcomes:
                            outcomes[o.index] = o
                            tick("")
                    if json_path is not None and time.monotonic() - last >= checkpoint:
                        _write(json_path, plan, outcomes, False, None, time.perf_counter() - start)
                        last = time.monotonic()
            caught.check()
            complete = True
        finally:
            if not complete:
                client.cancel(futures)
                if json_path is not None:  # what is done is kept: --resume takes it from here
                    _write(json_path, plan, outcomes, False, None, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    ordered = [outcomes[i] for i in range(plan.size)]
    status, summary = plan.finish(plan, ordered, seconds, out, err)
    if json_path is not None:
        _write(json_path, plan, outcomes, True, summary, seconds)
        print(f"results written to {json_path}", file=err)
    if report_dir is not None and plan.report is not None:
        plan.report(plan, ordered, report_dir, err)
    return status
