"""User-facing errors.

Anything a user can cause (a bad path, a bad file, a bad setting) is raised as :class:`FmprepError`
with one line that says what went wrong and what to do. The CLI prints that line and exits with
status 2; everything else is a bug and keeps its traceback.
"""


class FmprepError(Exception):
    """An error the user can fix; ``str(err)`` is a single line naming the fix."""

    def __init__(self, message: str):
        # One line, always: a multi-line message would be cut by log collectors.
        super().__init__(" ".join(str(message).split()))
