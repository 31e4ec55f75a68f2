r"""References from a user's own forward, whatever the framework: what ``check_module`` falls back to.

A model that does not import (a custom derivative, an op outside the schema)
has no rounding model and no second implementation; what is left is its own
forward. The framework adapters (:mod:`hessverify.adapters.torch_check`,
:mod:`hessverify.adapters.tensorflow_check`) compute, in float64, two AD
Hessians (reverse over reverse, forward over reverse) and the gradient;
this module holds the parts that need no framework:

* :func:`fd_of_gradient`: central differences of the gradient at steps ``h``
  and ``2h``, Richardson-extrapolated, with the error estimate of the
  extrapolation (``|D(h) - D(2h)| / 3``) plus the gradients' rounding over
  the step;
* :func:`serving_references`: each AD reference first held to ``fd`` within
  ``fd``'s estimate (a custom derivative that cuts the second-order path makes
  both AD references disagree with ``fd``, which reads the first derivative
  only); those that agree serve, the others are named with why;
* :func:`judge`: the user's matrix held to every serving reference within an
  estimated bound (:data:`ESTIMATED_FACTOR`), as a :class:`ModuleCheckResult`;
* matrix-free (:mod:`hessverify.adapters.torch_hvp`, :mod:`hessverify.adapters.jax_hvp`): :func:`fd_hvp`
  along one direction, :func:`serving_hvp_references`, :func:`judge_probe` (normwise per tensor,
  :data:`HVP_FACTOR`), :class:`ProbeRecord`, :class:`HvpCheckResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hessverify.base.precision import get_precision
from hessverify.checking.check import CheckResult
from hessverify.engine.compare import Comparison, compare
from hessverify.errors import exception_text

__all__ = ["ESTIMATED_FACTOR", "HVP_FACTOR", "HvpCheckResult", "ModuleCheckResult", "ProbeRecord", "exact_step",
           "fd_hvp", "fd_of_gradient", "gradient_noise", "judge", "judge_probe", "mask_of", "probe_vector", "scale",
           "serving_hvp_references", "serving_references"]

ESTIMATED_FACTOR = 64.0
"""``C`` of the estimated bound ``C u sqrt(r_i r_j)`` (``u`` the unit roundoff of the user's format, ``r_i`` the
largest ``|H|`` of row ``i``) for models with no rounding model: a few dozen roundings of the largest terms of the
two rows.  Measured: a correct float32 Hessian of the tests' custom-Function MLP reaches margin 0.07 (float64:
0.02 against fd, 0 against rev-rev)."""


@dataclass
class ModuleCheckResult(CheckResult):
    """A :class:`~hessverify.checking.check.CheckResult` that also says which references served and why others
    did not (``served``, ``not_served``), and how the model was judged (``route``: ``"imported"`` or
    ``"module references"``)."""

    route: str = ""
    served: tuple[str, ...] = ()
    not_served: dict[str, str] = field(default_factory=dict)
    model: str = ""

    def summary(self) -> str:
        head = f"{self.model}: judged by {self.route} ({', '.join(self.served) or 'none'} served"
        if self.not_served:
            head += "; not served: " + "; ".join(f"{k}: {v}" for k, v in self.not_served.items())
        head += ")"
        return head + "\n" + super().summary()

    @property
    def subject(self) -> str:
        """The model judged by module references (it has no problem), as the imported route names its problem."""
        return self.problem.id if self.problem is not None else self.model


@dataclass(frozen=True)
class _Names:
    """What a comparison reads of a problem: the id and the parameter names."""

    id: str
    param_names: tuple[str, ...]


def exact_step(theta: np.ndarray, v: np.ndarray, h: float, tries: int = 4) -> tuple[float, float]:
    """A power of two ``s <= h`` for the central differences along ``v``, and the largest relative error of their
    steps, ``max |((theta +- s v) - theta) -+ s v| / (s max |v|)`` at ``s`` and ``2 s`` (0.0: exact).

    A central difference divides by the step it means to take; the step it takes is what ``theta + s v``
    rounds to.  For ``h`` not a power of two, or ``v`` with more bits than the room left below ``theta``'s,
    the two differ by about ``u |theta| / s`` relative, about ``1e-10`` at ``s = u^{1/3}``: an error of the
    quotient that its Richardson estimate does not see, and that made a correct HVP fail against fd (margin
    1.57, a ``tanh`` MLP at all-equal inputs).  A power of two times a vector of few bits (signs, or the probes'
    rounded entries, :func:`probe_vector`) adds exactly to ``theta``, unless a sum crosses a power of two of
    ``theta_j``; then a smaller ``s`` is tried (``tries`` steps in all, ``h``'s power of two the first), and the least error kept.
    """
    theta, v = np.asarray(theta, np.float64), np.asarray(v, np.float64)
    s = 2.0 ** np.floor(np.log2(h))
    vmax = max(float(np.max(np.abs(v), initial=0.0)), 1e-300)
    best = (float(s), np.inf)
    for _ in range(tries):
        worst = 0.0
        for step in (s, 2 * s):
            sv = step * v
            for taken in ((theta + sv) - theta, theta - (theta - sv)):
                worst = max(worst, float(np.max(np.abs(taken - sv), initial=0.0)) / (step * vmax))
        if worst < best[1]:
            best = (float(s), worst)
        if worst == 0.0:
            break
        s /= 2
    return best


PROBE_BITS = 8
"""Significant bits of a drawn probe entry (:func:`probe_vector`)."""


def probe_vector(z: np.ndarray) -> np.ndarray:
    """``z`` rounded to ``PROBE_BITS`` significant bits relative to its largest entry: a probe direction whose
    steps ``theta +- s v`` are exact for a power-of-two ``s`` (:func:`exact_step`), and as random; an entry that
    would round to 0 is one grain of its sign, so that no column of ``H`` goes unprobed."""
    z = np.asarray(z, np.float64)
    top = float(np.max(np.abs(z), initial=0.0))
    if top == 0.0:
        return z
    grain = 2.0 ** (np.floor(np.log2(top)) - PROBE_BITS + 1)
    v = np.round(z / grain) * grain
    return np.where(v == 0.0, np.where(z < 0, -grain, grain), v)  # no zero entry: every column is probed


NOISE_DIRECTIONS = 3
"""Random sign directions over every parameter of :func:`gradient_noise`."""

NOISE_STEP = 2.0 ** -30 * 1.3819660112501051
"""The relative step of :func:`gradient_noise`: the exact second difference over it, ``|d|^2`` times the third
derivative (about ``1e-18`` of it), is far below the rounding it measures.  Not a power of two (the factor is
``(5 - sqrt 5) / 2``): a dyadic step can be a whole number of a result's ulps, and then every perturbed value
rounds as the unperturbed one and the noise reads 0."""


def gradient_noise(grad: Callable[[np.ndarray], np.ndarray], theta: np.ndarray) -> np.ndarray:
    """Per component, the largest ``|g(theta + d) - 2 g(theta) + g(theta - d)|`` over ``NOISE_DIRECTIONS`` tiny
    random steps ``d`` (signs times ``NOISE_STEP max(1, |theta_j|)``, per parameter): the rounding noise of the float64 gradient,
    measured (``2 NOISE_DIRECTIONS + 1`` gradients).

    Central differences divide the part of the gradient's rounding error that does not vary smoothly with
    ``theta`` by their step.  A second difference over a tiny step cancels the smooth part (the gradient and its
    exact change, up to ``|d|^2`` times the third derivative) and leaves that noise, about twice its size.  An
    estimate from ``|g|`` alone misses it where the gradient cancels, a sum of terms far larger than itself: on
    a ``tanh`` MLP at all-equal inputs a gradient entry of ``5e-3`` carries ``4e-16`` of rounding, ten times the
    ``64 u |g|`` once assumed.  Computed once per check (``fd_hvp``'s ``noise``): it depends on ``theta`` only.
    """
    theta = np.asarray(theta, dtype=np.float64)
    rng = np.random.default_rng(0)
    size = NOISE_STEP * np.maximum(1.0, np.abs(theta))  # per parameter: one large one must not widen the rest
    g0 = np.asarray(grad(theta), dtype=np.float64)
    noise = np.zeros_like(g0)
    for _ in range(NOISE_DIRECTIONS):
        d = rng.choice([-1.0, 1.0], theta.size) * size
        gp, gm = np.asarray(grad(theta + d), np.float64), np.asarray(grad(theta - d), np.float64)
        noise = np.maximum(noise, np.abs(gp - 2 * g0 + gm))
    return noise


def fd_of_gradient(grad: Callable[[np.ndarray], np.ndarray], theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the float64 gradient ``grad``, Richardson-extrapolated from steps ``h`` and ``2h``,
    and their error.

    .. math::

       D(h)_{:,j} = \\frac{g(\\theta + h e_j) - g(\\theta - h e_j)}{2h},\\qquad
       H \\approx \\frac{4 D(h) - D(2h)}{3},\\qquad
       |\\text{error}| \\lesssim \\frac{|D(h) - D(2h)|}{3} + \\frac{c\\,u\\,|g|}{h}

    (the truncation of ``D(h)`` is ``O(h^2)``, so ``D(2h)``'s is four times
    as large: their difference measures it; Press et al., Numerical Recipes
    5.7).  ``h`` is the power of two at most ``u^{1/3} max(1, |theta_j|)`` whose steps are exact
    (:func:`exact_step`).  The estimate is the largest of
    its column (one direction), since one entry's two differences can agree by
    accident.  The result is symmetrised; the asymmetry joins the error.  The rounding term is the larger of
    ``c u |g| / h`` and ``nu / h``, ``nu`` the gradient's measured rounding noise (:func:`gradient_noise`).
    """
    u = 2.0 ** -53
    theta = np.asarray(theta, dtype=np.float64)
    W = theta.size
    noise = gradient_noise(grad, theta)
    D1, D2, R = np.empty((W, W)), np.empty((W, W)), np.empty((W, W))
    for j in range(W):
        e_j = np.zeros(W)
        e_j[j] = 1.0
        h, _ = exact_step(theta, e_j, u ** (1 / 3) * max(1.0, abs(float(theta[j]))))
        cols = []
        for step in (h, 2 * h):
            e = step * e_j
            gp, gm = np.asarray(grad(theta + e), dtype=np.float64), np.asarray(grad(theta - e), dtype=np.float64)
            cols.append((gp - gm) / (2 * step))
            if step == h:
                R[:, j] = np.maximum(64 * u * (np.abs(gp) + np.abs(gm)) / 2, noise) / h
        D1[:, j], D2[:, j] = cols
    H = (4 * D1 - D2) / 3
    err = np.abs(D1 - D2) / 3 * 2 + R * 5 / 3
    err = np.broadcast_to(err.max(axis=0), err.shape)  # per column (one direction), as one entry's can vanish
    asym = np.abs(H - H.T) / 2
    H = (H + H.T) / 2
    return H, np.maximum(err, err.T) + asym


def scale(R: np.ndarray) -> np.ndarray:
    """``sqrt(r_i r_j)``, ``r_i`` the largest ``|R|`` of row ``i`` (a floor of the largest entry's ``1e-3``)."""
    r = np.max(np.abs(R), axis=1)
    r = np.maximum(r, 1e-3 * (r.max() if r.size else 0.0))
    return np.sqrt(np.outer(r, r))


def serving_references(fd: tuple[np.ndarray, np.ndarray], ad: dict[str, Callable[[], np.ndarray]],
                       param_names: Sequence[str]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """The references that serve, ``name -> (H, error)``, and why the others did not.

    ``fd`` (:func:`fd_of_gradient`) always serves (it needs the gradient only); an AD reference (``ad[name]()``
    computes it in float64) serves when it agrees with ``fd`` within ``fd``'s error plus its own rounding
    (``C u`` of the scale, and the spread between the AD references).
    """
    u = 2.0 ** -53
    H_fd, fd_err = fd
    served: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    not_served: dict[str, str] = {}
    got: dict[str, np.ndarray] = {}
    for name, compute in ad.items():
        try:
            got[name] = np.asarray(compute(), dtype=np.float64)
        except Exception as exc:  # a custom derivative without jvp, a kernel without a second derivative
            not_served[name] = exception_text(exc, 120)
    values = list(got.values())
    spread = np.abs(values[0] - values[1]) if len(values) == 2 else 0.0
    for name, H in got.items():
        err = ESTIMATED_FACTOR * u * scale(H_fd) + spread
        over = np.abs(H - H_fd) > fd_err + err
        if over.any():
            i, j = np.unravel_index(np.argmax(np.abs(H - H_fd) / (fd_err + err)), H.shape)
            zero = " (zero where fd is not: a second-order path cut, a derivative that is not differentiable?)" \
                if H[i, j] == 0 and H_fd[i, j] != 0 else " (a second-order path cut or a wrong second derivative?)"
            not_served[name] = (f"disagrees with fd at {int(over.sum())} entries beyond fd's error estimate; worst "
                                f"{param_names[i]} x {param_names[j]}: {H[i, j]:.6g} vs fd {H_fd[i, j]:.6g}{zero}")
            continue
        served[name] = (H, err)
    served["fd"] = (H_fd, fd_err)
    return served, not_served


def judge(A: np.ndarray, refs: dict[str, tuple[np.ndarray, np.ndarray]], not_served: dict[str, str],
          mask: np.ndarray | None, precision: str, returns: str, model: str,
          param_names: Sequence[str], groups: Sequence[int] | None = None) -> ModuleCheckResult:
    """The user's ``(W, W)`` matrix ``A`` (only ``mask``'s entries given) held to each serving reference within
    its error plus ``C u`` of the scale, ``u`` the unit roundoff of ``precision``, the format the user's
    function computes in (the result says it was judged in it).  ``groups[p]``: the tensor of entry ``p``
    (contiguous), so that a failure says in which blocks its error lives (:func:`hessverify.reports.localise.localise`)."""
    u = get_precision(precision).unit_roundoff
    names = _Names(model, tuple(param_names))
    comparisons: list[Comparison] = []
    failed = {}
    for ref, (R, err) in refs.items():
        bound = err + ESTIMATED_FACTOR * u * scale(R)
        a, r = (A, R) if mask is None else (np.where(mask, A, 0.0), np.where(mask, R, 0.0))
        comparisons.append(compare(names, "user", ref, a, r, bound, "estimated"))  # type: ignore[arg-type]
        if not comparisons[-1].passed:
            failed[ref] = (a, r, bound)
    passed = all(c.passed for c in comparisons)
    localisations = {}
    if groups is not None and failed:
        from hessverify.reports.localise import Layout, localise

        layout = Layout.of_names(model, names.param_names, groups)
        localisations = {ref: localise(layout, a, r, bound) for ref, (a, r, bound) in failed.items()}
    return ModuleCheckResult(passed, 1, returns, tuple(refs), None, comparisons,
                             {k: "estimated: error estimate + C u scale" for k in refs}, route="module references",
                             served=tuple(refs), not_served=not_served, model=model, precision=precision,
                             localisations=localisations)


def mask_of(returns: str, groups: np.ndarray) -> np.ndarray | None:
    """The entries a ``returns`` gives: the diagonal, the blocks of ``groups`` (one group index per entry), or all."""
    if returns == "diagonal":
        return np.eye(groups.size, dtype=bool)
    if returns == "blocks":
        return groups[:, None] == groups[None, :]
    return None


HVP_FACTOR = 256.0
"""``C`` of a probe's normwise bound.  Measured on ``benchmarks/hvp_at_scale.py`` (W = 1,070,794, float32): at
``C = 64`` a correct HVP reached margin 0.92 (a random probe) and the HVP with one block 0.1 % off 231 (that
layer's probe); 256 puts the correct one near a quarter of its bound and the faulty one near 58 times over."""

# -- matrix-free ------------------------------------------------------------------------------------------------


@dataclass
class ProbeRecord:
    """One probe: its name, the references that served and why others did not, the worst ratio to the bound."""

    name: str
    passed: bool
    served: tuple[str, ...]
    not_served: dict[str, str]
    margin: float  # max over references and entries of |error| / bound
    worst: str  # "rev-rev at conv1.weight[0,0,1,2]: user 1.2, reference 1.3, bound 1e-9"


@dataclass
class HvpCheckResult:
    """The outcome of a matrix-free ``check_hvp``: every probe, and the estimate beside the measurement."""

    passed: bool
    n_params: int
    probes: list[ProbeRecord]
    estimate: dict[str, float] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    what: str = "check_hvp"  # or check_diagonal (hessverify.adapters.torch_diag), whose probes are entries and sums

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[ProbeRecord]:
        return [p for p in self.probes if not p.passed]

    def summary(self) -> str:
        est, got = self.estimate, self.measured
        head = (f"{self.what} {'passed' if self.passed else 'FAILED'}: W = {self.n_params}, {len(self.probes)} probes; "
                f"estimated {est.get('seconds', 0):.1f} s, {est.get('bytes', 0) / 2**20:.0f} MiB; "
                f"measured {got.get('seconds', 0):.1f} s, peak RSS +{got.get('rss_bytes', 0) / 2**20:.0f} MiB")
        rows = self.failures if not self.passed else [max(self.probes, key=lambda p: p.margin)] if self.probes else []
        lines = [f"  {p.name}: {'ok' if p.passed else 'FAIL'} margin {p.margin:.3g}; {p.worst}; served "
                 f"{', '.join(p.served)}" + (f"; not served: {p.not_served}" if p.not_served else "") for p in rows]
        return "\n".join([head, *lines])


def fd_hvp(grad: Callable[[np.ndarray], np.ndarray], theta: np.ndarray,
           v: np.ndarray, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Richardson-extrapolated central differences of the gradient along ``v``, and their error estimate
    (as :func:`fd_hessian`, one direction; the estimate is normwise: one entry's two differences can agree by
    accident where its truncation is not small).  ``noise``: :func:`gradient_noise` at ``theta``, if the caller
    has it (one per check, not one per probe)."""
    u = 2.0 ** -53
    theta, v = np.asarray(theta, np.float64), np.asarray(v, np.float64)
    scale = max(1.0, float(np.max(np.abs(theta), initial=0.0))) / max(float(np.max(np.abs(v), initial=0.0)), 1e-300)
    h, inexact = exact_step(theta, v, u ** (1 / 3) * scale)
    if noise is None:
        noise = gradient_noise(grad, theta)
    D = []
    rounding = None
    for step in (h, 2 * h):
        gp, gm = np.asarray(grad(theta + step * v), np.float64), np.asarray(grad(theta - step * v), np.float64)
        D.append((gp - gm) / (2 * step))
        if rounding is None:
            rounding = np.maximum(64 * u * (np.abs(gp) + np.abs(gm)) / 2, noise) / h
    err = np.abs(D[0] - D[1]) / 3 * 2 + rounding * 5 / 3
    if inexact:  # steps that are not s v: the quotient is along a nearby direction (an estimate of the difference)
        err = err + 4 * inexact * float(np.max(np.abs(D[0]), initial=0.0))
    return (4 * D[0] - D[1]) / 3, np.full_like(err, float(err.max()))


def serving_hvp_references(fd: np.ndarray, fd_err: np.ndarray, ad: dict[str, np.ndarray],
                           not_served: dict[str, str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """As :func:`serving_references`, for one probe's ``H v`` (normwise)."""
    u = 2.0 ** -53
    names = list(ad)
    spread = np.abs(ad[names[0]] - ad[names[1]]) if len(ad) == 2 else 0.0
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, R in ad.items():
        err = spread + ESTIMATED_FACTOR * u * float(np.max(np.abs(fd), initial=0.0))
        over = np.abs(R - fd) > fd_err + err
        if over.any():
            not_served[name] = f"disagrees with fd at {int(over.sum())} entries beyond fd's error estimate " \
                               "(a second-order path cut?)"
            continue
        refs[name] = (R, err)
    refs["fd"] = (fd, fd_err)
    return refs


def tensor_max(a: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each entry's tensor's largest value: ``sizes`` the offsets of the tensors in the flat vector (and its end)."""
    return np.repeat(np.maximum.reduceat(a, sizes[:-1]), np.diff(sizes))


def judge_probe(name: str, A: np.ndarray, refs: dict[str, tuple[np.ndarray, np.ndarray]],
                not_served: dict[str, str], u: float, names: Callable[[int], str],
                sizes: np.ndarray) -> ProbeRecord:
    """One probe's ``A = H v`` against every serving reference, normwise per tensor:
    ``|A_i - R_i| <= e_i + C u max |R_T(i)|``, ``T(i)`` the tensor of entry ``i``."""
    margin, worst, passed = 0.0, "", True
    for ref, (R, err) in refs.items():
        bound = np.broadcast_to(err + HVP_FACTOR * u * tensor_max(np.abs(R), sizes), R.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.isfinite(A), np.abs(A - R) / np.maximum(bound, 1e-300), np.inf)
        i = int(np.argmax(ratio))
        if ratio[i] > 1:
            passed = False
        if ratio[i] >= margin:
            margin = float(ratio[i])
            worst = f"{ref} at {names(i)}: user {A[i]:.10g}, reference {R[i]:.10g}, bound {bound[i]:.3g}"
    return ProbeRecord(name, passed and bool(refs), tuple(refs), not_served, margin, worst)
