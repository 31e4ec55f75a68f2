"""Errors meant for people, each with the exit status the command line uses.

| status | meaning |
| --- | --- |
| 0 | every comparison agrees within its bound |
| 1 | a discrepancy: some method disagrees with some reference |
| 2 | invalid input or usage (case file, option, name; an output another hessverify run is writing) |
| 3 | the Hessian does not exist at this point (a relu pre-activation exactly at its kink) |
| 4 | numeric overflow: the network's values are not finite at this point |
| 5 | the function under test failed: it raised, exited, was killed or crashed, hung past ``--timeout`` or gave no usable array |
| 6 | ``hessverify stationary``: no stationary point found within ``--max-iter`` |
| 130 | interrupted (SIGINT, Ctrl-C); 143: terminated (SIGTERM); partial output is removed |
"""

from __future__ import annotations

__all__ = [
    "EXIT_DISCREPANCY",
    "EXIT_FUNCTION_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_INVALID",
    "EXIT_NOT_DIFFERENTIABLE",
    "EXIT_OK",
    "EXIT_OVERFLOW",
    "exception_line",
    "exception_text",
    "BudgetError",
    "CaseError",
    "FunctionUnderTestError",
    "HessverifyError",
    "NotDifferentiableError",
    "OverflowReport",
    "Terminated",
    "UnsupportedModel",
    "UsageError",
    "signal_behind",
]

EXIT_OK = 0
EXIT_DISCREPANCY = 1
EXIT_INVALID = 2
EXIT_NOT_DIFFERENTIABLE = 3
EXIT_OVERFLOW = 4
EXIT_FUNCTION_FAILED = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class HessverifyError(Exception):
    """Base class: a message for a person and the exit status to leave with."""

    exit_code = EXIT_INVALID


class UsageError(HessverifyError, ValueError):
    """Bad arguments: an unknown method, a malformed parameter name, ..."""


class UnsupportedModel(UsageError):
    """A user's model (``hessverify.torch.import_module``) uses an op, module, setting or loss the case schema
    lacks; the message names it and where it is (the module's path or the line of ``forward``)."""


class CaseError(HessverifyError, ValueError):
    """A case file that cannot be used: names the file, the key and the fault."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        where = f"{source}: " if source else ""
        keypart = f"[{key}] " if key else ""
        super().__init__(f"{where}{keypart}{message}")


class NotDifferentiableError(HessverifyError, ArithmeticError):
    """The error function is not twice differentiable at this point."""

    exit_code = EXIT_NOT_DIFFERENTIABLE


class OverflowReport(HessverifyError, ArithmeticError):
    """Some intermediate value overflowed to inf or became NaN."""

    exit_code = EXIT_OVERFLOW


class BudgetError(UsageError):
    """The work asked for would need more memory or time than the budget allows (``--max-memory``)."""


class FunctionUnderTestError(HessverifyError, RuntimeError):
    """The user's function failed: it raised, called ``sys.exit``, hung past the timeout, or returned
    something that is not a usable real array of the right shape.

    Not a discrepancy: nothing could be compared.  ``problem`` is the problem it failed on (its
    ``to_toml()`` reproduces it), ``where`` the last frames of the traceback in the user's own
    file, ``cause`` the exception it raised (``None`` for a bad return value or a hang).
    """

    exit_code = EXIT_FUNCTION_FAILED

    def __init__(self, message: str, *, problem: object = None, where: str = "",
                 cause: BaseException | None = None) -> None:
        self.message, self.problem, self.where, self.cause = message, problem, where, cause
        super().__init__(f"the function under test failed: {message}" + (f" ({where})" if where else ""))


class Terminated(BaseException):
    """SIGTERM, raised where the program is by the command line's handler, so that partial output is
    cleaned up on the way out; a BaseException so that ``except Exception`` cannot eat it."""


def signal_behind(exc: BaseException) -> KeyboardInterrupt | Terminated | None:
    """The signal behind ``exc``, if it is an ordinary error caused by one, else None.

    A signal that lands while an extension module initialises (a SciPy module that a reference
    loads lazily, pybind11's in particular) comes out as that import's ``ImportError``, with the
    ``KeyboardInterrupt`` (or :class:`Terminated`) as its cause: it is still the person's
    interrupt, not a failure.  Only these two count; the library's own control-flow exceptions
    (a timeout alarm, a function-failed marker) are not signals.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (KeyboardInterrupt, Terminated)):
            return link
        # as Python's own traceback does: "raise ... from None" hides the context (check.py re-raises
        # the user's error from None out of its BaseException wrapper, which is no interrupt)
        link = link.__cause__ if link.__cause__ is not None else (
            None if link.__suppress_context__ else link.__context__)
    return None


def exception_line(exc: BaseException) -> str:
    """One line for ``exc``'s message: its first, except for TensorFlow's two wrappers, whose first line only
    introduces the error: ``"in user code:"`` (tracing a ``tf.function``; the error is the last line) and
    ``"Graph execution error:"`` (running one; the error is the last line before the ``[[{{node ...}}]]``
    trailer).  A type the caller names anyway (``exc``'s own) is not repeated."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and lines[0] in ("in user code:", "Graph execution error:"):
        body = [line for line in lines[1:] if not line.startswith("[[")] or lines[1:]
        last = body[-1]
        own = f"{type(exc).__name__}: "
        return last[len(own):] if last.startswith(own) else last
    return lines[0]


def exception_text(exc: BaseException, width: int | None = None) -> str:
    """``"Type: line"`` for ``exc`` (:func:`exception_line`, cut to ``width`` characters), or the type alone."""
    line = exception_line(exc)[:width]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
