"""What a framework's table can write, and the draws that stay inside it.

Each framework adapter writes the case schema in its own operations from a
table (:mod:`~hessverify.adapters.torch_table`, :mod:`~hessverify.adapters.jax_table`,
:mod:`~hessverify.adapters.tensorflow_table`): one row per activation, per
loss and, where the framework has them, per layer kind.  The tables are
optional for a new activation or loss: adding one to
:mod:`hessverify.model.activations` or :mod:`hessverify.model.losses` (and to
the independent reference :mod:`hessverify.references.autograd_ref`) is the
whole change.  A framework without the row then

* refuses a problem that needs it in one line (:func:`require`, raising
  :class:`~hessverify.errors.UnsupportedModel`, which names the table to add
  the row to), never a bare ``KeyError``;
* leaves it out of what it draws (:func:`within`): ``cases()`` and the
  conformance rows draw only activations and losses the table has, so the
  framework's tests and rows keep running on the rest.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from hessverify.errors import UnsupportedModel
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES
from hessverify.model.problem import Problem

__all__ = ["missing", "require", "within"]

_DRAWN = (("activations", "activation"), ("output_activations", "activation"), ("losses", "loss"))


def missing(problem: Problem, framework: str, table: str, *, activations: Collection[str],
            losses: Collection[str], kinds: Collection[str] | None = None) -> str | None:
    """Why ``framework`` cannot write ``problem`` from its table (``None``: it can), in one sentence.

    ``activations``, ``losses`` and ``kinds`` are the table's rows (``kinds=None``: every layer kind).
    """
    for index, layer in enumerate(problem.architecture.layers, start=1):
        if kinds is not None and layer.kind not in kinds:
            return f"layer {index} is a {layer.kind} layer, which {framework}'s table ({table}) has no row for"
        if layer.activation not in activations:
            return (f"layer {index}'s activation {layer.activation!r} has no row in {framework}'s table ({table}); "
                    "add one there to write it")
    if str(problem.loss) not in losses:
        return f"the loss {str(problem.loss)!r} has no row in {framework}'s table ({table}); add one there to write it"
    return None


def require(problem: Problem, framework: str, table: str, *, activations: Collection[str],
            losses: Collection[str], kinds: Collection[str] | None = None) -> None:
    """Raise :class:`~hessverify.errors.UnsupportedModel` with :func:`missing`'s sentence if there is one."""
    why = missing(problem, framework, table, activations=activations, losses=losses, kinds=kinds)
    if why is not None:
        raise UnsupportedModel(f"{problem.id}: {why}")


def within(draw: Mapping[str, Any], framework: str, table: str, *, activations: Collection[str],
           losses: Collection[str]) -> dict[str, Any]:
    """The keywords of :func:`hessverify.checking.strategies.problems` restricted to the table's rows.

    A keyword left out (or ``None``) becomes every schema name the table has, in the schema's order (so
    shrinking still prefers the schema's first names); a name given that the table lacks is refused in one
    line (:class:`~hessverify.errors.UnsupportedModel`) rather than drawn and failed later.
    """
    out = dict(draw)
    rows = {"activation": (activations, tuple(ACTIVATIONS)), "loss": (losses, tuple(LOSSES))}
    for key, what in _DRAWN:
        have, schema = rows[what]
        chosen = out.get(key)
        if chosen is None:
            if key == "output_activations" and draw.get("activations") is not None:
                continue  # problems() takes the hidden layers' choices for the output layer too
            out[key] = tuple(name for name in schema if name in have)
            continue
        lacking = [name for name in chosen if name not in have]
        if lacking:
            raise UnsupportedModel(f"{key}={list(chosen)!r}: {', '.join(map(repr, lacking))} "
                                   f"{'has' if len(lacking) == 1 else 'have'} no row in {framework}'s table ({table})")
    return out
