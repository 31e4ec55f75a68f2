"""How often ``hessverify verify CASE --report DIR`` computes the same thing.

Runs the command in this process under :mod:`cProfile` and prints how many
times each expensive step was called: the rounding bound (a whole
magnitude-Hessian assembly), the well-posedness check, the forward pass and
the eigendecomposition.  Counting by profile rather than by patching catches
every call, including those made through names imported elsewhere
(``from hessverify.engine.bounds import rounding_bound``).

This counts calls; it times nothing.  Usage::

    python benchmarks/run_counts.py cases/xor-2-2-1-sigmoid.toml
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import io
import pstats
import tempfile

COUNTED = {
    "rounding_bound": ("rounding_bound", "hessverify/engine/bounds.py"),
    "magnitude_hessian": ("magnitude_hessian", "hessverify/engine/bounds.py"),
    # the well-posedness check: check_point before issue 12, ensure_well_posed after
    "well-posedness check": ("check_point", "hessverify/model/forward.py"),
    "well-posedness check ": ("ensure_well_posed", "hessverify/model/well_posed.py"),
    "forward": ("forward", "hessverify/model/forward.py"),
    "eigvalsh": ("eigvalsh", "numpy/linalg/"),
}
"""What is counted -> (function name, where it is defined: a path fragment, so a namesake elsewhere is not counted)."""


def counts(case: str, *, report: bool = True) -> dict[str, int]:
    """Calls of each :data:`COUNTED` function during one ``hessverify verify`` of ``case``."""
    from hessverify.cli import main

    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        argv = ["verify", case] + (["--report", out] if report else [])
        profile.enable()
        main(argv)
        profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    found = dict.fromkeys(COUNTED, 0)
    for (path, _line, name), (_cc, ncalls, *_rest) in stats.items():
        for what, (function, where) in COUNTED.items():
            if name == function and where in path.replace("\\", "/"):
                found[what] += ncalls
    found["well-posedness check"] += found.pop("well-posedness check ")
    # every approximation's own function: how often each is computed
    from hessverify.engine.registry import METHODS

    for m in METHODS.values():
        if m.role == "approximation":
            fn = m.fn
            if hasattr(fn, "module") and hasattr(fn, "attr"):  # the registry's Lazy: named, imported on use
                fn = getattr(importlib.import_module(fn.module), fn.attr)
            code = getattr(fn, "__code__", None)
            key = (code.co_filename, code.co_firstlineno, code.co_name) if code is not None else None
            found[f"approximation {m.name}"] = stats[key][1] if key in stats else 0
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", nargs="?", default="cases/xor-2-2-1-sigmoid.toml")
    parser.add_argument("--no-report", action="store_true", help="verify only, no --report")
    args = parser.parse_args()
    for name, n in counts(args.case, report=not args.no_report).items():
        print(f"{name:28s} {n:5d}")


if __name__ == "__main__":
    main()
