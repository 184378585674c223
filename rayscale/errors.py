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


def read_yaml(path, what: str, missing_fix: str, bad_fix: str):
    """A YAML file the user named, or a UserError naming WHAT: the file unreadable, or not
    YAML (the parser's first line only: the error stays one line)."""
    from pathlib import Path

    import yaml

    try:
        return yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror}", missing_fix) from None
    except yaml.YAMLError as e:
        raise UserError(f"{what} is not valid YAML ({str(e).splitlines()[0]})", bad_fix) from None
