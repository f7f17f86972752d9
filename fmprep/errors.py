"""User-facing errors, and the settings they name.

Anything a user can cause (a bad path, a bad file, a bad setting) is raised as :class:`FmprepError`
with one line that says what went wrong and what to do. The CLI prints that line and exits with
status 2; everything else is a bug and keeps its traceback.

A message names a setting through :func:`setting` rather than spelling it: the library does not
know whether the user set the make variable ``SOURCE`` or typed ``fmprep data --source …``. The
command line chooses the spelling once (:func:`use_spelling`): the make variable under make (the
Makefile exports the FMPREP_SPELLING environment variable as ``make``), the long option for
the ``fmprep`` command; a value written right after the setting stays after the variable's
``=`` under make and becomes ``--days-scale=years`` as an option. :func:`command` names a command
the same way (``make data`` / ``fmprep data``), and :func:`aside` adds the long option in
parentheses after a make spelling, for a reader who runs fmprep directly.
"""

from __future__ import annotations

import os
import re

# The marker around a setting's name inside a message: characters no path, id or value in a
# message contains, and no whitespace (messages are folded to one line).
_OPEN, _CLOSE = "\u27e8", "\u27e9"
# ⟨name⟩ a setting, ⟨cmd:name⟩ a command, ⟨aside:name⟩ the option in parentheses (make
# only);
# then the text up to the next space or token: the value written after the setting, if any.
_TOKEN = re.compile(f"{_OPEN}(?:(cmd|aside):)?([a-z0-9_-]+){_CLOSE}([^\\s{_OPEN}]*)")
# What may follow a setting without being its value: "set ⟨source⟩, …", "(⟨output⟩)".
_TRAILING = ",;:.)]'\""
SPELLINGS = ("make", "cli")
# Settings whose long option takes no value: ⟨force⟩1 is --force (1 only tells make "on").
SWITCHES = frozenset({"force", "quiet", "verbose"})
_spelling = "make"  # library default: the Makefile's words, as the README uses them


def setting(name: str) -> str:
    """A reference to the user setting ``name`` (snake_case: ``"days_scale"``) in a message."""
    return f"{_OPEN}{name}{_CLOSE}"


def command(name: str) -> str:
    """A reference to the command ``name`` (``"data"``): ``make data`` or ``fmprep data``."""
    return f"{_OPEN}cmd:{name}{_CLOSE}"


def aside(name: str) -> str:
    """`` (--name)`` after a make spelling of setting ``name``; nothing when spelled as options
    (the option was just named)."""
    return f"{_OPEN}aside:{name}{_CLOSE}"


def flag(name: str) -> str:
    """The long option of setting ``name``: ``--days-scale``."""
    return "--" + name.replace("_", "-")


def use_spelling(spelling: str | None = None) -> str:
    """Choose how messages spell settings for this process; returns the choice.

    ``None`` reads the FMPREP_SPELLING environment variable (``make`` when the Makefile runs
    the command), else ``cli``.
    """
    global _spelling
    chosen = spelling or os.environ.get("FMPREP_SPELLING", "").strip().lower() or "cli"
    _spelling = chosen if chosen in SPELLINGS else "cli"
    return _spelling


def current_spelling() -> str:
    """The spelling messages are rendered with: ``make`` or ``cli``."""
    return _spelling


def render(text: str, spelling: str | None = None) -> str:
    """``text`` with every :func:`setting` spelled for the make variable or the CLI flag."""
    style = spelling or _spelling

    def spell(m: re.Match) -> str:
        kind, name, after = m.groups()
        if kind == "cmd":
            return ("make " if style == "make" else "fmprep ") + name + after
        if kind == "aside":
            return (f" ({flag(name)})" if style == "make" else "") + after
        if style == "make":
            return f"{name.upper()}={after}"
        tail = after[len(after.rstrip(_TRAILING)):]  # punctuation closing the sentence
        if after == tail:                              # no value: the option alone
            return flag(name) + after
        if name in SWITCHES:                           # ⟨force⟩1 → --force
            return flag(name) + tail
        return f"{flag(name)}={after}"
    return _TOKEN.sub(spell, text)


class FmprepError(Exception):
    """An error the user can fix; ``str(err)`` is a single line naming the fix."""

    def __init__(self, message: str):
        # One line, always: a multi-line message would be cut by log collectors.
        super().__init__(" ".join(str(message).split()))

    def __str__(self) -> str:
        return render(super().__str__())
