"""A fuzz test of the command line: Hypothesis draws case files (valid, damaged and hostile) and argument
lists, runs ``hessverify.cli.main`` in process, and holds every run to the standard of issue 11:

* no traceback, no exception out of ``main``: one ``hessverify: error:`` line at most;
* a documented exit status;
* no file changed outside the output paths.

CI pays a few seconds (a few dozen examples, whatever the profile); the ``thorough`` profile runs many more
(``--hessverify-profile thorough``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hessverify.cli import main

DOCUMENTED = {0, 1, 2, 3, 4, 5}
EXAMPLES = max(20, settings.default.max_examples // 8)  # dev 25 -> 20, ci 200 -> 25, thorough 5000 -> 625


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04X}" for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _toml(doc: dict[str, Any]) -> str:
    lines = []
    for k, v in doc.items():
        if not isinstance(v, dict):
            lines.append(f'"{k}" = {_toml_value(v)}')
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f'["{k}"]')
            lines += [f'"{kk}" = {_toml_value(vv)}' for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


scalars = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.booleans(),
                    st.text(max_size=12), st.just(10**400), st.just(1e308))
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(["units", "activation", "bias", "x"]), inner, max_size=3),
                        max_leaves=8)


@st.composite
def case_docs(draw: st.DrawFn) -> dict[str, Any]:
    n_in = draw(st.integers(1, 3))
    units = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    acts = draw(st.lists(st.sampled_from(["tanh", "sigmoid", "relu", "identity", "softplus"]),
                         min_size=len(units), max_size=len(units)))
    loss = draw(st.sampled_from(["sse", "cross_entropy", "binary_cross_entropy", "output"]))
    doc: dict[str, Any] = {
        "id": draw(st.sampled_from(["fuzz", "fuzz", "fuzz-2", "Bad Id", ""])),
        "description": draw(st.text(max_size=20)),
        "network": {"inputs": n_in, "layers": [{"units": u, "activation": a} for u, a in zip(units, acts)],
                    "loss": loss},
        "data": {"seed": draw(st.integers(0, 5)), "patterns": draw(st.integers(1, 4))},
        "params": {"seed": draw(st.integers(0, 5)), "scale": draw(st.sampled_from([0.1, 1.0, 1e200]))},
    }
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # damage: replace or drop a key somewhere
        table = draw(st.sampled_from(["", "network", "data", "params"]))
        where = doc if not table else doc.get(table)
        if not isinstance(where, dict) or not where:
            continue
        key = draw(st.sampled_from(sorted(where)))
        if draw(st.booleans()):
            where[key] = draw(anything)
        else:
            del where[key]
    return doc


@st.composite
def case_texts(draw: st.DrawFn) -> bytes:
    text = _toml(draw(case_docs())).encode()
    kind = draw(st.sampled_from(["toml"] * 6 + ["bom", "bytes", "deep"]))
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        depth = draw(st.integers(30, 3000))
        return b"id = \"x\"\nv = " + b"[" * depth + b"]" * depth + b"\n"
    return text


OPTIONS = {
    "verify": [["--method", "backprop", "--reference", "autograd"], ["--method", "diagonal", "--reference", "fd"],
               ["--reference", "becker_lecun"], ["--json", "{out}/r.json"], ["--json", ""], ["--report", ""],
               ["--json", "{out}/missing/r.json"], ["--max-memory", "1M"], ["--max-memory", "lots"]],
    "hessian": [["--method", "backprop"], ["--method", "block_diagonal"], ["--method", "nope"],
                ["--max-memory", "2M"]],
    "params": [[]],
    "derive": [["--entry", "W1[0,0]"], ["--entry", "W01[0,0]"], ["--entry", "b1[0]", "W1[0,0]", "--digits", "20"],
               ["--entry", "W1[0,0]", "--digits", "100000"]],
}


@st.composite
def argvs(draw: st.DrawFn) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    extra = list(draw(st.sampled_from(OPTIONS[command])))
    if command == "hessian":
        extra += ["--out", draw(st.sampled_from(["{out}/H.npy", "{out}/H.txt", "", "/dev/null"]))]
    if draw(st.integers(0, 9)) == 0:
        extra.append(draw(st.sampled_from(["--bogus", "-x", "--method"])))
    return command, extra


def _snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and skip not in p.parents}


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case_texts(), argvs())
def test_the_command_line_never_breaks(text: bytes, command_args: tuple[str, list[str]]) -> None:
    command, extra = command_args
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "out"
        out.mkdir()
        case = root / "case.toml"
        case.write_bytes(text)
        argv = [command, str(case)] + [a.replace("{out}", str(out)) for a in extra]
        before = _snapshot(root, out)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(argv)  # an exception escaping here fails the test: that is a traceback
        err = stderr.getvalue()
        event(f"{command} exit {status}")
        assert status in DOCUMENTED, (argv, status, err)
        assert "Traceback" not in err, (argv, err)
        assert len([x for x in err.splitlines() if x.startswith("hessverify: error:")]) <= 1, err
        if status == 2:
            assert err.startswith("hessverify: error:") and err.count("\n") == 1, (argv, err)
        assert _snapshot(root, out) == before, argv  # only out/ may change
        assert sorted(os.listdir(root)) == ["case.toml", "out"]
