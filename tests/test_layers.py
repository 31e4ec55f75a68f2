"""The layering of the package (docs/architecture.md): contracts that pass, and that fail when broken.

``lint-imports`` checks the import-linter contracts of ``pyproject.toml``, imports
inside functions included.  A copy of the package with one upward import
planted shows the contract can fail; ``import hessverify`` is checked, in a fresh
interpreter, to load neither SymPy, autograd nor matplotlib.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

needs_lint_imports = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed "
                                        "(pip install -e '.[dev]')")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


@needs_lint_imports
def test_the_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@needs_lint_imports
@pytest.mark.parametrize(("module", "planted", "broken"), [
    # the rounding model borrowing a method under test (the cycle this layering removed)
    ("engine/bounds.py", "    from hessverify.methods.backprop import hessian  # noqa\n", "hessverify.engine.bounds -> hessverify.methods"),
    # the model asking the rounding model above it
    ("model/forward.py", "    from hessverify.engine.bounds import gamma  # noqa\n", "hessverify.model.forward -> hessverify.engine.bounds"),
    # an independent reference calling the model's forward pass
    ("references/autograd_ref.py", "    from hessverify.model.forward import forward  # noqa\n",
     "hessverify.references.autograd_ref -> hessverify.model.forward"),
])
def test_an_upward_import_inside_a_function_breaks_a_contract(tmp_path: Path, module: str, planted: str,
                                                                broken: str) -> None:
    shutil.copytree(ROOT / "hessverify", tmp_path / "hessverify", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "hessverify" / module
    target.write_text(target.read_text() + "\n\ndef _planted() -> None:\n" + planted)
    result = _lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout
    assert broken in result.stdout


def test_import_hessverify_loads_no_sympy_autograd_or_matplotlib() -> None:
    code = ("import sys, hessverify; heavy = ('sympy', 'autograd', 'matplotlib', 'hypothesis', 'mpmath'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_registry_loads_a_method_on_its_first_call() -> None:
    code = ("import sys, hessverify; case = hessverify.load_case('cases/xor-2-2-1-sigmoid.toml'); "
            "assert 'autograd' not in sys.modules; hessverify.hessian(case, 'autograd'); "
            "assert 'autograd' in sys.modules and 'sympy' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr
