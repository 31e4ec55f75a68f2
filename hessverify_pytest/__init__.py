"""The hessverify pytest plugin (registered through the ``pytest11`` entry point).

It is loaded by every pytest run in an environment where hessverify is
installed, so it imports nothing heavy at module level: Hypothesis is imported
only when a profile is asked for, and hessverify (NumPy, SciPy, SymPy,
autograd: over a second) only when a fixture is used.  It lives outside the
``hessverify`` package because importing ``hessverify.anything`` would
import all of ``hessverify/__init__.py`` first.

What it adds:

* Hypothesis profiles ``dev`` (quick), ``ci`` (at least 200 examples for each
  property, derandomised) and ``thorough`` (5000 examples), see
  :data:`PROFILES`;
* ``--hessverify-profile {dev,ci,thorough,auto}`` and the ini option
  ``hessverify_profile`` (``auto``: ``ci`` when the environment variable
  ``CI`` is set, else ``dev``; empty, the default: leave Hypothesis's own
  profile alone, so installing hessverify never changes another project's
  tests).  ``--hypothesis-profile`` also accepts the three names and wins
  over the ini option; ``--hessverify-profile`` wins over both;
* fixtures: ``hessverify_case`` (each shipped case in the ini option
  ``hessverify_cases``, default ``cases/``, one test per case, the case id as
  test id; without that option and without a ``cases/`` directory, the cases
  installed with hessverify), ``hessverify_cases`` (all of them, a list) and
  ``hessverify_assert_close`` (:func:`hessverify.assert_hessian_close`);
* ``hessverify_torch_case`` and ``hessverify_jax_case``: each case as the
  framework's objects (:class:`hessverify.adapters.torch.TorchCase`: ``module``,
  ``inputs``, ``targets``, ``loss_fn``, ``loss``, ``params``;
  :class:`hessverify.adapters.jax.JaxCase`: ``apply``, ``params``, ``inputs``, ...),
  one test per case, skipped when PyTorch or JAX is not installed.  The JAX
  fixture turns on float64 (``jax_enable_x64``), which hessverify's bounds need;
* ``hessverify_check_module``: your curvature code on your own PyTorch model
  (:func:`hessverify.adapters.torch.check_module`, or with ``probes=K`` the
  matrix-free :func:`hessverify.adapters.torch.check_hvp`), an
  ``AssertionError`` with the summary when it fails;
* ``--hessverify-timeout SECONDS`` and the ini option ``hessverify_timeout``:
  how long one call of the function under test may take in
  ``hessverify_assert_close`` (default 60; 0: no limit).  A call past it
  fails the test with :class:`hessverify.FunctionUnderTestError`, as does a
  function that raises or returns no usable array.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PROFILES", "register_profiles", "resolve_profile"]

PROFILES: dict[str, dict[str, Any]] = {
    # quick feedback while editing: the whole property suite in well under a minute
    "dev": {"max_examples": 25, "deadline": None},
    # CI: at least 200 examples per property, the same examples on every run (derandomize) so a
    # red build is reproducible, and no example database (a fresh clone has none to replay)
    "ci": {"max_examples": 200, "deadline": None, "derandomize": True, "database": None, "print_blob": True},
    # before a release or after touching a method: minutes, not seconds
    "thorough": {"max_examples": 5000, "deadline": None},
}
"""Hypothesis settings of each profile.  No deadline: the fd reference's cost
grows with W^2 and timing on shared CI machines is noise."""

_CHOICES = (*PROFILES, "auto")


def register_profiles() -> None:
    """Register :data:`PROFILES` with Hypothesis (imports Hypothesis)."""
    from hypothesis import HealthCheck, settings

    for name, kwargs in PROFILES.items():
        # too_slow: a problem's generation includes a forward pass to reject relu kinks
        settings.register_profile(name, suppress_health_check=[HealthCheck.too_slow], **kwargs)


def resolve_profile(name: str) -> str:
    """``auto`` becomes ``ci`` when the environment variable ``CI`` is set, else ``dev``."""
    if name == "auto":
        return "ci" if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no") else "dev"
    return name


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hessverify", "hessverify")
    group.addoption("--hessverify-profile", choices=_CHOICES, default=None,
                    help="Hypothesis profile: dev (quick), ci (>= 200 examples per property), thorough (5000), "
                         "auto (ci when $CI is set, else dev)")
    parser.addini("hessverify_profile", default="",
                  help="profile when --hessverify-profile is not given (dev, ci, thorough, auto; empty: none)")
    parser.addini("hessverify_cases", default="cases", help="directory of case files for the hessverify_case fixture")
    group.addoption("--hessverify-timeout", type=float, default=None, metavar="SECONDS",
                    help="longest one call of the function under test may take in hessverify_assert_close "
                         "(default 60; 0: no limit)")
    parser.addini("hessverify_timeout", default="", help="default of --hessverify-timeout")


def _wanted(config: pytest.Config) -> tuple[str | None, bool]:
    """The profile to load, and whether it was asked for on the command line."""
    explicit = config.getoption("hessverify_profile")
    if explicit:
        return resolve_profile(explicit), True
    ini = str(config.getini("hessverify_profile") or "").strip()
    if ini and ini not in _CHOICES:
        raise pytest.UsageError(f"ini option hessverify_profile = {ini!r}: choose one of {', '.join(_CHOICES)}")
    return (resolve_profile(ini) if ini else None), False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Register before Hypothesis's own plugin loads --hypothesis-profile, so that
    # `--hypothesis-profile thorough` finds the name.
    name, _ = _wanted(config)
    if name or config.getoption("hypothesis_profile", None) in PROFILES:
        register_profiles()


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # After every plugin's pytest_configure (Hypothesis's loads --hypothesis-profile there).
    config = session.config
    name, explicit = _wanted(config)
    if name is None or (config.getoption("hypothesis_profile", None) and not explicit):
        return
    from hypothesis import settings

    settings.load_profile(name)


def pytest_report_header(config: pytest.Config) -> str | None:
    name, _ = _wanted(config)
    if name is None:
        return None
    return f"hessverify: Hypothesis profile {name!r} ({PROFILES[name]['max_examples']} examples per property)"


# -- fixtures for the shipped cases ------------------------------------------------

_CASE_FIXTURES = ("hessverify_case", "hessverify_torch_case", "hessverify_jax_case")


def _case_paths(config: pytest.Config) -> list[Path]:
    option = str(config.getini("hessverify_cases"))
    root = Path(config.rootpath) / option
    paths = sorted(root.glob("*.toml"))
    if not paths and option == "cases" and not root.exists():
        # the default, and no cases/ here: the cases installed with hessverify (package data)
        from hessverify.io.cases import shipped_cases

        paths = shipped_cases()
    if not paths:
        # an empty parameter set would skip silently: say why instead
        raise pytest.UsageError(
            f"hessverify fixtures: no *.toml case files in {root}; set the ini option hessverify_cases "
            "(or -o hessverify_cases=DIR) to a directory of case files, such as a copy of hessverify's cases/")
    return paths


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name in _CASE_FIXTURES:
        if name in metafunc.fixturenames:
            paths = _case_paths(metafunc.config)
            metafunc.parametrize(name, paths, ids=[p.stem for p in paths], indirect=True)


@pytest.fixture
def hessverify_case(request: pytest.FixtureRequest) -> Any:
    """Each shipped case as a :class:`hessverify.Problem` (one test per case file)."""
    from hessverify import load_case

    return load_case(request.param)


@pytest.fixture
def hessverify_torch_case(request: pytest.FixtureRequest) -> Any:
    """Each shipped case as a :class:`hessverify.adapters.torch.TorchCase` (float64); skipped without PyTorch."""
    pytest.importorskip("torch", reason="hessverify_torch_case needs PyTorch: pip install 'hessverify[torch]'")
    from hessverify import load_case
    from hessverify.adapters.torch import to_case

    return to_case(load_case(request.param))


@pytest.fixture
def hessverify_jax_case(request: pytest.FixtureRequest) -> Any:
    """Each shipped case as a :class:`hessverify.adapters.jax.JaxCase` (float64, so it enables ``jax_enable_x64``);
    skipped without JAX."""
    jax = pytest.importorskip("jax", reason="hessverify_jax_case needs JAX: pip install 'hessverify[jax]'")
    jax.config.update("jax_enable_x64", True)
    from hessverify import load_case
    from hessverify.adapters.jax import to_case

    return to_case(load_case(request.param))


@pytest.fixture(scope="session")
def hessverify_cases(pytestconfig: pytest.Config) -> list[Any]:
    """Every shipped case, loaded, in file-name order."""
    from hessverify import load_case

    return [load_case(p) for p in _case_paths(pytestconfig)]


def _timeout(config: pytest.Config) -> float:
    value = config.getoption("hessverify_timeout", None)
    if value is None:
        ini = str(config.getini("hessverify_timeout") or "").strip()
        try:
            value = float(ini) if ini else 60.0
        except ValueError:
            raise pytest.UsageError(f"ini option hessverify_timeout = {ini!r}: give seconds, e.g. 60") from None
    if not value >= 0:
        raise pytest.UsageError(f"--hessverify-timeout {value}: give seconds, at least 0 (0: no limit)")
    return float(value)


@pytest.fixture
def hessverify_assert_close(pytestconfig: pytest.Config) -> Any:
    """:func:`hessverify.assert_hessian_close`, for ``hessverify_assert_close(my_hessian, case)``,
    with ``--hessverify-timeout`` as the default ``timeout`` of each call."""
    import functools

    from hessverify import assert_hessian_close

    return functools.partial(assert_hessian_close, timeout=_timeout(pytestconfig))


@pytest.fixture
def hessverify_check_module() -> Any:
    """``hessverify_check_module(fn, model, loss_fn, inputs, targets, returns=..., probes=...)``: your curvature
    code on your own PyTorch model (:func:`hessverify.torch.check_module`, or with ``probes=K`` and
    ``returns="hvp"`` the matrix-free :func:`hessverify.torch.check_hvp`); an ``AssertionError`` with the
    summary when it fails, else the result.  Skipped when PyTorch is missing."""
    pytest.importorskip("torch", reason="pip install 'hessverify[torch]' to check PyTorch modules")
    import hessverify.adapters.torch as hvt

    def check(fn: Any, model: Any, loss_fn: Any, inputs: Any, targets: Any, *, returns: str = "hessian",
              probes: int | None = None, **kwargs: Any) -> Any:
        if probes is not None:
            result = hvt.check_hvp(fn, model, loss_fn, inputs, targets, probes=probes, **kwargs)
        else:
            result = hvt.check_module(fn, model, loss_fn, inputs, targets, returns=returns, **kwargs)
        if not result.passed:
            raise AssertionError(result.summary())
        return result

    return check
