"""Are two ``results.json`` the same up to rounding?  (Same records, same verdicts, numbers within 1e-12.)

``created`` and the ``environment`` block are ignored; every other value is
compared: strings, booleans and counts exactly, floats to a relative
tolerance (default 1e-12, with an absolute floor of 1e-300 for zeros).
Prints every difference (path, both values) and exits 1 if there is any.

Between versions whose methods round differently (a faster assembly sums in
another order), errors of 1e-17 differ relatively by much more than 1e-12 and
the worst entry can move to another entry of the same size; ``--verdicts``
then compares what rounding cannot change: the same records, the same
verdicts, the same summary counts, the same inertia of every case, and the
Hessian's value at each worst entry both name, to 1e-12 relative.

Usage::

    python benchmarks/compare_results.py OLD/results.json NEW/results.json
    python benchmarks/compare_results.py OLD/results.json NEW/results.json --verdicts
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

IGNORED = {"created", "environment"}


def differences(a: Any, b: Any, rtol: float, path: str = "$") -> list[str]:
    """Every place where ``a`` and ``b`` differ beyond ``rtol``, as ``path: a != b``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if path == "$" and key in IGNORED:
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'new' if key in b else 'old'}")
                continue
            out += differences(a[key], b[key], rtol, f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items"]
        return [d for k, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, rtol, f"{path}[{k}]")]
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return [] if a == b else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, int) and isinstance(b, int):
        return [] if a == b else [f"{path}: {a} != {b}"]
    if math.isclose(a, b, rel_tol=rtol, abs_tol=1e-300):
        return []
    return [f"{path}: {a!r} != {b!r}"]


def verdict_differences(a: dict[str, Any], b: dict[str, Any], rtol: float) -> list[str]:
    """Records, verdicts, summary counts, inertia and worst-entry Hessian values that differ (``--verdicts``)."""
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["case"], r["method"], r["reference"]

    ra, rb = {key(r): r for r in a["results"]}, {key(r): r for r in b["results"]}
    out = [f"record {k}: only in {'new' if k in rb else 'old'}" for k in sorted(set(ra) ^ set(rb))]
    for k in sorted(set(ra) & set(rb)):
        x, y = ra[k], rb[k]
        if x["passed"] != y["passed"]:
            out.append(f"record {k}: passed {x['passed']} != {y['passed']}")
        wx, wy = x["worst_entry"], y["worst_entry"]
        if (wx["row"], wx["col"]) == (wy["row"], wy["col"]):
            out += differences(wx["reference_value"], wy["reference_value"], rtol, f"record {k} reference value")
    out += [f"summary.{n}: {a['summary'][n]} != {b['summary'][n]}" for n in sorted(set(a["summary"]) & set(b["summary"]))
            if a["summary"][n] != b["summary"][n]]
    ia = {c["case"]: c.get("inertia") for c in a.get("cases", [])}
    ib = {c["case"]: c.get("inertia") for c in b.get("cases", [])}
    for case in sorted(set(ia) & set(ib)):
        counts = [(i or {}).get(n) for i in (ia[case], ib[case]) for n in ("positive", "negative", "zero")]
        if counts[:3] != counts[3:]:
            out.append(f"case {case} inertia: {counts[:3]} != {counts[3:]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rtol", type=float, default=1e-12)
    parser.add_argument("--verdicts", action="store_true",
                        help="compare records, verdicts, counts, inertia and worst-entry values only")
    args = parser.parse_args()
    with open(args.old) as f_old, open(args.new) as f_new:
        old, new = json.load(f_old), json.load(f_new)
    found = verdict_differences(old, new, args.rtol) if args.verdicts else differences(old, new, args.rtol)
    for line in found:
        print(line)
    n = len(old.get("results", []))
    what = "verdict" if args.verdicts else f"ignoring {', '.join(sorted(IGNORED))}"
    print(f"{n} records; {len(found)} difference(s) beyond rtol {args.rtol:g} ({what})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
