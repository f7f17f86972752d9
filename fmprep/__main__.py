"""``python -m fmprep``: run the command line, then leave without the interpreter's teardown.

Every path out goes through ``os._exit``, errors and bugs included. On an error, Arrow may
still hold blocks that the source stream handed it (read ahead on its I/O threads); they are
Python objects, and the Arrow thread that drops the last reference takes the GIL to release
them. Once the interpreter is finalizing, a thread that asks for the GIL is ended with
``pthread_exit``; inside Arrow's C++ destructors that aborts the process ("terminate called
without an active exception", 6 runs in 200 on a failing source). ``os._exit`` ends the
process without finalizing; every file is written and closed by then. It also skips 0.3-0.7 s
of garbage collection and module cleanup of dask, pyarrow and numba on success.

:func:`entry` is the same for a console script (``[project.scripts] fmprep =
"fmprep.__main__:entry"``).
"""

import logging
import os
import sys
import traceback

from .cli import main


def _status() -> int:
    try:
        return main()
    except SystemExit as done:   # sys.exit() below main(): keep its status
        if isinstance(done.code, int) or done.code is None:
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:        # a bug: its traceback, and the status Python would give
        traceback.print_exc()
        return 1


def entry() -> None:
    """Run ``fmprep`` with ``sys.argv`` and end the process with its status (never returns)."""
    status = _status()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (fmprep … | head): nothing more to say
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
