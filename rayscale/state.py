"""The state dir: where a cluster's record, token and lock live between commands.

Resolution order: an explicit --state-dir, else $RAYSCALE_STATE_DIR, else .rayscale/ under
the current directory. A state dir holds clusters by name, as `ray up`'s cluster_name and
kind's --name do: `default` at its root, any other under clusters/NAME/.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayscale.errors import UserError

CLUSTER_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
LOCK_FILE = "lock"
CONFIG_DIR = "config"  # configs a provider renders for its cluster (ray-up YAML, manifests)
LOGS_DIR = "logs"
# In a folder the kit made: teardown deletes only such folders, never a user's own config/ or
# logs/ under a --state-dir that is also their project folder.
MADE_MARK = ".made-by-rayscale"
DEFAULT_CLUSTER = "default"
CLUSTERS_DIR = "clusters"
# Names reach kind cluster names and Kubernetes object names: DNS-1123 labels, kept short.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")


def resolve(state_dir: str | os.PathLike | None = None) -> Path:
    chosen = state_dir or os.environ.get("RAYSCALE_STATE_DIR") or ".rayscale"
    return Path(chosen).expanduser().resolve()


def results_dir() -> Path:
    """Where commands write what they make unless told: results/ under the current
    directory [env RAYSCALE_RESULTS_DIR]."""
    return Path(os.environ.get("RAYSCALE_RESULTS_DIR") or "results").resolve()


_picked = ""  # the options that chose this command's cluster, repeated in commands it prints


def command(text: str) -> str:
    """A rayscale command line to print in a fix, for the cluster this command works on."""
    return f"`rayscale {text}{_picked}`"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UserError(
            f"cluster name {name!r} is not 1-20 lowercase letters, digits and inner dashes",
            "pass e.g. --cluster big or --cluster gpu-2",
        )
    return name


class StateDir:
    def __init__(self, path: str | os.PathLike | None = None, cluster: str = DEFAULT_CLUSTER):
        self.root = resolve(path)
        self.name = check_name(cluster)
        self.path = self.root if cluster == DEFAULT_CLUSTER else self.root / CLUSTERS_DIR / cluster

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r}, {self.name!r})"

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_CLUSTER

    @property
    def option(self) -> str:
        """The option that picks this cluster again, for fixes printed to the user."""
        return "" if self.is_default else f" --cluster {self.name}"

    def pick(self) -> StateDir:
        """This command works on this cluster: the commands it prints name it."""
        global _picked
        _picked = self.option
        return self

    def siblings(self) -> list[StateDir]:
        """Every cluster recorded under this state dir's root, the default first."""
        found = [StateDir(self.root)]
        with contextlib.suppress(FileNotFoundError):
            for d in sorted((self.root / CLUSTERS_DIR).iterdir()):
                if NAME_RE.fullmatch(d.name) and d.name != DEFAULT_CLUSTER:
                    found.append(StateDir(self.root, d.name))
        return [s for s in found if s.cluster_file.exists()]

    @property
    def cluster_file(self) -> Path:
        return self.path / CLUSTER_FILE

    @property
    def config_dir(self) -> Path:
        return self.own_dir(CONFIG_DIR)

    @property
    def logs_dir(self) -> Path:
        return self.own_dir(LOGS_DIR)

    def own_dir(self, name: str) -> Path:
        """A folder for the kit's files, made (and marked as made) if missing."""
        d = self.path / name
        if not d.is_dir():
            self.ensure()
            d.mkdir(mode=0o700, exist_ok=True)
            (d / MADE_MARK).touch()
        return d

    @property
    def token_file(self) -> Path:
        return self.path / TOKEN_FILE

    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise UserError(
                f"cannot create state dir {self.path}: {e.strerror}",
                "pass a writable --state-dir or set RAYSCALE_STATE_DIR",
            ) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for commands that change the cluster (up, scale, down)."""
        self.ensure()
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"another rayscale command is changing the cluster in {self.path}",
                    "wait for it to finish, or start another with --cluster NAME",
                ) from None
            yield
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.cluster_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(
                f"cluster record {self.cluster_file} is unreadable ({e})",
                f"remove it after stopping the cluster's processes, then run {command('cluster up')} again",
            ) from None

    def write(self, record: dict[str, Any]) -> None:
        self.ensure()
        tmp = self.cluster_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, self.cluster_file)

    @contextlib.contextmanager
    def _record_lock(self) -> Iterator[None]:
        """A short lock around one read-and-write of the record (held for milliseconds, so
        waited for): commands that only read may still update it, e.g. a restarted forward."""
        if not self.path.is_dir():  # no record to guard
            yield
            return
        fd = os.open(self.path / "record.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, record: dict[str, Any], *keys: str) -> bool:
        """Write `keys` of `record` into the record on disk if it still records that same
        cluster (its `created`); False where it was cleared or replaced meanwhile, which
        then stays as it is."""
        with self._record_lock():
            current = self.read()
            if not current or current.get("created") != record.get("created"):
                return False
            current.update({k: record[k] for k in keys})
            self.write(current)
            return True

    def clear(self, keep_logs: bool = False) -> None:
        with self._record_lock():
            for name in (CLUSTER_FILE, TOKEN_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
        self.remove_own(CONFIG_DIR)
        if not keep_logs:
            self.remove_own(LOGS_DIR)

    def remove_own(self, name: str) -> None:
        """Delete a folder the kit made; one it found (the user's own) is left as it is."""
        d = self.path / name
        if (d / MADE_MARK).exists():
            shutil.rmtree(d, ignore_errors=True)

    def new_token(self) -> Path:
        """A fresh random token, readable by its owner only (mode 0600 from creation)."""
        self.ensure()
        with contextlib.suppress(FileNotFoundError):
            self.token_file.unlink()
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return self.token_file

    def token(self) -> str | None:
        try:
            return self.token_file.read_text().strip() or None
        except FileNotFoundError:
            return None
