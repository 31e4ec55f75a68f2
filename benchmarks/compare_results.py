"""Are two ``results.json`` the same up to rounding?  (Same records, same verdicts, numbers within 1e-12.)

``created`` and the ``environment`` block are ignored; every other value is
compared: strings, booleans and counts exactly, floats to a relative
tolerance (default 1e-12, with an absolute floor of 1e-300 for zeros).
Prints every difference (path, both values) and exits 1 if there is any.

Usage::

    python benchmarks/compare_results.py OLD/results.json NEW/results.json
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rtol", type=float, default=1e-12)
    args = parser.parse_args()
    with open(args.old) as f_old, open(args.new) as f_new:
        old, new = json.load(f_old), json.load(f_new)
    found = differences(old, new, args.rtol)
    for line in found:
        print(line)
    n = len(old.get("results", []))
    print(f"{n} records; {len(found)} difference(s) beyond rtol {args.rtol:g} (ignoring {', '.join(sorted(IGNORED))})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
