"""The one error type for user mistakes.

The CLI prints a UserError as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad option, bad file, unreachable cluster, wrong token."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class Unreachable(UserError):
    """The cluster's dashboard / Job API did not answer (down, or its forward dropped)."""
