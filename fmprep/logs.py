"""Which libraries' log lines reach stderr: none of their chatter unless asked (-v, or the
make variable VERBOSE set to 1).

fmprep's commands print their own lines. Without this, botocore says "Found credentials in
environment variables" on every command run under ``logging.basicConfig(level=INFO)``
(scripts/train_deploy.py), and distributed's shuffle plugin logs each shuffle it starts and
stops at WARNING level on a LocalCluster (the ``local`` scheduler), quiet or not.

fmprep's own lines go through :class:`StderrHandler`, which spells the settings they name as
errors are spelled (:func:`fmprep.errors.render`).
"""

from __future__ import annotations

import logging
import os
import sys

from .errors import render

# Library loggers and the level below which their records are dropped when not verbose.
QUIET_LEVELS = {
    "botocore": logging.WARNING, "boto3": logging.WARNING, "aiobotocore": logging.WARNING,
    "s3fs": logging.WARNING, "fsspec": logging.WARNING, "urllib3": logging.WARNING,
    # "Shuffle … initialized by task …" / "… deactivated due to stimulus …": bookkeeping,
    # logged at WARNING; a failed shuffle still raises in the task that ran it.
    "distributed.shuffle._scheduler_plugin": logging.ERROR,
}
# With -v, botocore's retry decisions too ("Retry needed, retrying request after delay of: …"),
# but not its "Not retrying request." after every request. These loggers emit them.
RETRY_LOGGERS = ("botocore.retries.standard", "botocore.retryhandler")
RETRY_WORDS = ("retry needed", "retrying", "max attempts", "quota")


def verbose_from_env() -> bool:
    """True when the FMPREP_VERBOSE environment variable (what make's VERBOSE sets) is set and
    not 0/false."""
    return os.environ.get("FMPREP_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test), with the
    settings a line names spelled for the command line (``log.warning("… %s", setting(…))``).
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass

    def format(self, record: logging.LogRecord) -> str:
        # After formatting: a setting may come from the message or from its arguments.
        return render(super().format(record))


class _LibraryPrinter(StderrHandler):
    # The root handler configure_libraries adds; a program's own StderrHandler on the root
    # (scripts/train_deploy.py's) is not one, so configure_libraries never removes that.
    pass


class _NotFmprep(logging.Filter):
    # fmprep's loggers print through their own handler (fmprep.cli): not twice.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("fmprep")


class _RetriesOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or \
            any(w in record.getMessage().lower() for w in RETRY_WORDS)


def configure_libraries(verbose: bool, handler: bool = False) -> None:
    """Silence library log chatter, or show it (with botocore's retries) when ``verbose``.

    Idempotent: a later call undoes an earlier one.

    Parameters
    ----------
    verbose : bool
        Show libraries' INFO lines and botocore's retries.
    handler : bool
        With ``verbose``, add a root handler that prints library records to stderr (for
        programs that have none, like the ``fmprep`` command); removed again when not verbose.
    """
    for name, level in QUIET_LEVELS.items():
        logging.getLogger(name).setLevel(logging.INFO if verbose else level)
    for name in RETRY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if verbose else logging.NOTSET)
        for f in [f for f in logger.filters if isinstance(f, _RetriesOnly)]:
            logger.removeFilter(f)
        if verbose:
            logger.addFilter(_RetriesOnly())
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _LibraryPrinter)]
    if verbose and handler and not ours:
        printer = _LibraryPrinter()
        printer.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        printer.addFilter(_NotFmprep())
        root.addHandler(printer)
    elif not (verbose and handler):
        for h in ours:
            root.removeHandler(h)
