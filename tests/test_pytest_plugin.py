"""Tests of the pytest plugin (hessverify_pytest): lazy import, profiles, option, fixtures.

Each scenario runs pytest in a fresh directory in a subprocess, because the
plugin acts at start-up (options, ini, profiles) and Hypothesis's settings are
process-wide.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROFILE_TEST = """
from hypothesis import settings

def test_profile():
    print("MAX_EXAMPLES", settings.default.max_examples)
    assert settings.default.max_examples == {expected}
"""


def run_pytest(tmp_path: Path, test: str, *args: str, ini: str = "",
               ci: bool = False) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_it.py").write_text(test)
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    # PYTHONDONTWRITEBYTECODE also stops pytest caching its assertion-rewritten copies of
    # Hypothesis's modules (pytest rewrites every module of a pytest11 plugin's distribution),
    # which costs each subprocess about a second
    drop = ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_registered_through_the_pytest11_entry_point() -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert "hessverify_pytest" in {p.value for p in points}


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    code = ("import sys, hessverify_pytest; "
            "print(sorted(m for m in ('hypothesis', 'numpy', 'hessverify', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PROFILE_SCENARIOS = [
    # (command-line options, ini text, CI set, expected max_examples)
    (("--hessverify-profile", "thorough"), "", False, 5000),
    (("--hessverify-profile", "dev"), "hessverify_profile = ci\n", False, 25),
    ((), "hessverify_profile = auto\n", True, 200),
    ((), "hessverify_profile = auto\n", False, 25),
    (("--hypothesis-profile", "ci"), "hessverify_profile = dev\n", False, 200),
    (("--hessverify-profile", "auto"), "", True, 200),
    # no option, no ini: installing hessverify must not change another project's settings
    ((), "", False, 100),
]


def test_profiles(tmp_path: Path) -> None:
    # the subprocesses are independent and each spends a second importing Hypothesis: run them together
    def scenario(i: int) -> subprocess.CompletedProcess[str]:
        args, ini, ci, expected = PROFILE_SCENARIOS[i]
        where = tmp_path / str(i)
        where.mkdir()
        return run_pytest(where, PROFILE_TEST.format(expected=expected), *args, ini=ini, ci=ci)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(scenario, range(len(PROFILE_SCENARIOS))))
    for (args, ini, ci, expected), result in zip(PROFILE_SCENARIOS, results, strict=True):
        assert result.returncode == 0, (f"options {args}, ini {ini!r}, CI={ci}: expected {expected} examples\n"
                                        + result.stdout + result.stderr)


def test_an_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, PROFILE_TEST.format(expected=0), "--hessverify-profile", "fast")
    assert result.returncode == 4 and "invalid choice: 'fast'" in result.stderr


def test_case_fixtures(tmp_path: Path) -> None:
    cases = tmp_path / "my-cases"
    cases.mkdir()
    for name in ("xor-2-2-1-sigmoid", "single-neuron-tanh"):
        (cases / f"{name}.toml").write_text((ROOT / "cases" / f"{name}.toml").read_text())
    test = (
        "def test_each(hessverify_case):\n"
        "    assert hessverify_case.n_params > 0\n"
        "def test_all(hessverify_cases):\n"
        "    assert [c.id for c in hessverify_cases] == ['single-neuron-tanh', 'xor-2-2-1-sigmoid']\n"
    )
    result = run_pytest(tmp_path, test, "-vv", ini="hessverify_cases = my-cases\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_each[xor-2-2-1-sigmoid] PASSED" in result.stdout and "3 passed" in result.stdout


def test_the_timeout_of_the_function_under_test(tmp_path: Path) -> None:
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "xor.toml").write_text((ROOT / "cases" / "xor-2-2-1-sigmoid.toml").read_text())
    test = (
        "import time, pytest, hessverify\n"
        "def slow(p):\n"
        "    time.sleep(30)\n"
        "def test_hangs(hessverify_assert_close, hessverify_case):\n"
        "    with pytest.raises(hessverify.FunctionUnderTestError, match='no result after 0.5 s'):\n"
        "        hessverify_assert_close(slow, hessverify_case, against=('autograd',))\n"
    )
    result = run_pytest(tmp_path, test, "--hessverify-timeout", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    bad = run_pytest(tmp_path / "cases", test, ini="hessverify_timeout = soon\nhessverify_cases = .\n")
    assert bad.returncode != 0 and "hessverify_timeout = 'soon'" in bad.stdout + bad.stderr


def test_framework_case_fixtures_and_the_installed_cases(tmp_path: Path) -> None:
    # no cases/ directory and no ini option: the cases installed with hessverify
    test = (
        "import numpy as np\n"
        "def test_torch(hessverify_torch_case):\n"
        "    import torch\n"
        "    H = torch.func.hessian(hessverify_torch_case.loss)(hessverify_torch_case.params)\n"
        "    assert H.shape == (hessverify_torch_case.problem.n_params,) * 2\n"
        "def test_jax(hessverify_jax_case):\n"
        "    assert hessverify_jax_case.flat_params.dtype == np.float64\n"
    )
    result = run_pytest(tmp_path, test, "-vv", "-k", "xor-2-2-1-sigmoid or linear")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for framework in ("torch", "jax"):
        try:
            __import__(framework)
        except ImportError:
            assert f"test_{framework}[xor-2-2-1-sigmoid] SKIPPED" in out
        else:
            assert f"test_{framework}[xor-2-2-1-sigmoid] PASSED" in out


def test_framework_fixtures_skip_cleanly_without_the_framework(tmp_path: Path) -> None:
    # a sitecustomize that hides torch and jax, as on a machine without them
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'jax'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n")
    test = "def test_torch(hessverify_torch_case):\n    pass\ndef test_jax(hessverify_jax_case):\n    pass\n"
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tmp_path) + (os.pathsep + old if old else "")
    try:
        result = run_pytest(tmp_path, test, "-rs", "-k", "linear")
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "2 skipped" in out and "pip install 'hessverify[torch]'" in out, out
