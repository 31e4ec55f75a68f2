"""The ``hessverify`` console script, kept apart from the library so that it imports almost nothing.

Importing :mod:`hessverify` (NumPy, SciPy, SymPy) takes a second or more; an
interrupt in that time would otherwise end in a traceback, or be swallowed
by some library's import.  :func:`main` ends the process at once, with one
line and status 130 (SIGINT) or 143 (SIGTERM), while it loads, when nothing
has been written yet; then the command line (:func:`hessverify.cli.main`)
takes charge of both signals and cleans up after itself.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _while_loading(signum: int, frame: object) -> None:
    interrupted = signum == signal.SIGINT
    try:
        os.write(2, b"hessverify: interrupted\n" if interrupted else b"hessverify: terminated\n")
    finally:
        os._exit(130 if interrupted else 143)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hessverify``; an interrupt while it is still loading is one line and status 130 (143: SIGTERM)."""
    previous = {s: signal.signal(s, _while_loading) for s in (signal.SIGINT, signal.SIGTERM)}
    from hessverify.cli import main as cli_main

    for s, handler in previous.items():
        signal.signal(s, handler)
    status = cli_main(argv if argv is not None else sys.argv[1:])
    # The work is done and its status decided: an interrupt now, while the interpreter shuts
    # down, would only turn that status into a death by signal.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    return status
