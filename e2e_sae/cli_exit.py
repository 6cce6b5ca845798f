"""How every command line of the project ends: ``sys.exit`` with its main's status, quietly when its
output went to a pipe whose reader has gone (``python -m sweeps status PATH | head``).

Why: Python raises BrokenPipeError at the first write after the reader closed (and again when it
flushes stdout at exit), which prints a traceback under output the user asked to cut short. As Unix
tools do, the command then stops at once, with the status a shell gives a process ended by SIGPIPE.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, as a shell reports `yes | head`'s yes


def exit_with(main: Callable[[], int | None]) -> None:
    """``sys.exit(main())``; on a broken stdout pipe, exit EXIT_BROKEN_PIPE without a traceback."""
    try:
        status = main()
        sys.stdout.flush()  # inside the try: a buffered tail hits the closed pipe here, not at exit
    except BrokenPipeError:
        # Point stdout at /dev/null, so that the interpreter's own flush at exit has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
    sys.exit(status)
