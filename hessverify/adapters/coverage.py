"""What an adapter's own network code covers, and one line for what it does not.

The torch and jax adapters write a network again from the case schema (to hand a user's function the
problem in the framework's terms and to serve as independent references). Until they write every layer
kind, a problem they cannot express is refused here with a :class:`~hessverify.errors.UsageError`, never
evaluated as something else.
"""

from __future__ import annotations

from collections.abc import Iterable

from hessverify.errors import UsageError
from hessverify.model.problem import Problem

__all__ = ["require_covered"]


def require_covered(problem: Problem, library: str, losses: Iterable[str]) -> None:
    """Raise :class:`UsageError` unless ``problem`` is a dense network with a loss in ``losses`` and no loss options.

    Examples
    --------
    >>> import hessverify
    >>> require_covered(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml"), "torch", ("sse",))
    >>> require_covered(hessverify.load_case("cases/attention-3x4-2heads.toml"), "torch", ("sse",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hessverify.errors.UsageError: hessverify.torch writes dense networks only; this problem has an attention ...
    """
    arch = problem.architecture
    if not arch.is_dense:
        where = next(((i, layer) for i, layer in enumerate(arch.layers, start=1)
                      if not layer.is_dense or layer.opts.get("gain")), None)
        article = "an" if where and where[1].kind[0] in "aeiou" else "a"
        what = (f"{article} {where[1].kind} layer (layer {where[0]})" if where and not where[1].is_dense
                else f"a dense layer with a gain (layer {where[0]})" if where else "an input shape")
        raise UsageError(f"hessverify.{library} writes dense networks only; this problem has {what}: "
                         "check it through hessverify's own methods and references")
    loss = str(problem.loss)
    if loss not in tuple(losses) or getattr(problem, "loss_options", None):
        raise UsageError(f"hessverify.{library} does not write the loss {loss!r}"
                         f"{' with options' if getattr(problem, 'loss_options', None) else ''}")
