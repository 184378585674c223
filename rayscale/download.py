"""A job's Tune experiment brought home: `job results ID|NAME --download DIR`.

Generic on every provider: a small job on the head (rayscale/onhead/pack.py) writes the
experiment's files into its log in base64 lines, and the launcher writes them here as the
log streams in, each checked against its sha256. Every file goes but checkpoints, of which
only the best trial's best goes (Tune's choice, by the run's metric and mode). A download
that fails leaves nothing: it is written beside DIR and moved into place at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from rayscale import jobs, tune_output
from rayscale.errors import UserError
from rayscale.state import command

PLAN, FILE, DATA, DONE = "RAYSCALE_PACK ", "RAYSCALE_FILE ", "RAYSCALE_DATA ", "RAYSCALE_DONE "


class Unpacker:
    """Writes the packer's lines under `dest` as they arrive."""

    def __init__(self, dest: Path, on_bytes: Callable[[int, int], None]):
        self.dest, self.on_bytes = dest, on_bytes
        self.plan: dict | None = None
        self.written: list[str] = []
        self.bytes = 0
        self._file = None
        self._rel = ""
        self._digest = hashlib.sha256()

    def feed(self, line: str) -> None:
        if line.startswith(DATA) and self._file:
            chunk = base64.b64decode(line[len(DATA) :])
            self._file.write(chunk)
            self._digest.update(chunk)
            self.bytes += len(chunk)
            self.on_bytes(self.bytes, self.plan["bytes"] if self.plan else 0)
        elif line.startswith(FILE):
            self._rel = _safe(json.loads(line[len(FILE) :])["path"])
            path = self.dest / self._rel
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "wb")  # noqa: SIM115 (closed at its DONE line)
            self._digest = hashlib.sha256()
        elif line.startswith(DONE) and self._file:
            self._file.close()
            self._file = None
            if json.loads(line[len(DONE) :])["sha256"] != self._digest.hexdigest():
                raise UserError(
                    f"{self._rel} arrived damaged (its sha256 differs from the head's)",
                    "download it again",
                )
            self.written.append(self._rel)
        elif line.startswith(PLAN):
            self.plan = json.loads(line[len(PLAN) :])

    def close(self) -> None:
        if self._file:
            self._file.close()


def _safe(rel: str) -> str:
    """A path from the head, kept inside the download folder."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise UserError(f"the head sent a file outside the experiment ({rel!r})")
    return str(p)


def experiment_of(
    j: jobs.Jobs, ident: str, experiment_path: list[str], storage_path: str | None
) -> str:
    """The experiment of IDENT, a job's ID or the bundled job's run name (`--name`, as
    `job resume` takes it: under the job's storage path)."""
    try:
        info = j.info(ident)
    except UserError as e:
        if "does not exist" not in e.problem:
            raise
        args = ["--storage-path", storage_path] if storage_path else []
        return f"{jobs.storage_path(args, j.endpoint)}/{ident}"
    return experiment_of_job(j, ident, experiment_path, info)


def experiment_of_job(j: jobs.Jobs, job_id: str, experiment_path: list[str], info=None) -> str:
    """Where job JOB_ID's Tune experiment is, as the head spells it: the bundled job's from
    its arguments and record, a script's as `job submit --working-dir` finds it."""
    info = info or j.info(job_id)
    words = shlex.split(info.entrypoint.split("&&")[-1])
    if "tune_xgboost.py" in words and not experiment_path:
        args = words[words.index("tune_xgboost.py") + 1 :]
        rec = j.result(job_id, info.status)
        return f"{jobs.storage_path(args, j.endpoint)}/{rec['name']}"
    return tune_output.read(j, job_id, experiment_path or None).path


def download(
    j: jobs.Jobs,
    exp_path: str,
    dest: Path,
    on_bytes: Callable[[int, int], None],
    timeout: float | None = None,
) -> dict:
    """The experiment at EXP_PATH (on the head) written to DEST/<its name>; what was written."""
    name = PurePosixPath(exp_path.split("://", 1)[-1].rstrip("/")).name
    final = Path(dest).expanduser().resolve() / name
    if final.exists():
        raise UserError(f"{final} exists already", "remove it, or pass another --download folder")
    partial = final.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    unpack = Unpacker(partial, on_bytes)
    packer = tune_output.submit_reader(j, ["python", "pack.py", exp_path], f"downloads {name}")
    try:
        status = j.wait(packer, timeout, on_log=unpack.feed)
        unpack.close()
        plan = unpack.plan
        if status != "SUCCEEDED" or plan is None or len(unpack.written) != plan["files"]:
            tail = " | ".join(j.logs(packer).strip().splitlines()[-2:])[-300:] or "no output"
            raise UserError(
                f"could not download {exp_path} from the head ({tail})",
                f"read the packer's log with {command(f'job logs {packer}')}",
            )
        partial.rename(final)
    except BaseException:
        unpack.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with_checkpoint = plan.get("best_checkpoint")
    return {
        "path": str(final),
        "from": exp_path,
        "files": len(unpack.written),
        "bytes": unpack.bytes,
        "best_checkpoint": str(final / with_checkpoint) if with_checkpoint else None,
        "checkpoint_files_left": plan.get("checkpoint_files_left", 0),
    }
