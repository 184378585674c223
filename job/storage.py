"""Tune's storage path: a directory every node shares, or object storage (s3://, gs://).

On a cluster of separate machines Ray Tune needs its storage path on storage every node
can write: trial checkpoints are written by the workers, the experiment state by the
driver. A node-local path fails at the first checkpoint ("Unable to set up cluster
storage"), so a search is refused before it starts when a worker cannot see what the
driver writes there. URIs go through pyarrow's filesystems: credentials from the usual
environment (instance profile, AWS_* / GOOGLE_* variables), and AWS_ENDPOINT_URL for an
S3-compatible store (MinIO, Ceph, moto).
"""

from __future__ import annotations

import os
import uuid

import tune_format
from data import InputError, first_line

SHARED_HINT = (
    "Tune needs storage every node shares: a path on a shared volume or filesystem "
    "(NFS; the docker provider's /home/ray/rayscale_results; a ReadWriteMany claim on "
    "Kubernetes) or object storage: --storage-path s3://bucket/path or gs://bucket/path"
)


def is_uri(path: str) -> bool:
    return "://" in path


def normalise(path: str) -> str:
    return path.rstrip("/") if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def _fs(uri: str):
    """(filesystem, path in it) for a URI or a local path."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri if is_uri(uri) else os.path.abspath(uri))
    except (pyarrow.ArrowInvalid, OSError, ValueError) as e:
        raise InputError(
            f"--storage-path {uri} cannot be opened ({first_line(e)}); "
            "check the scheme (s3://, gs://) and the bucket name"
        ) from None


# What Tune's trials fail with when the search's folder there vanished mid-search: a
# checkpoint write finds the marker the driver wrote at the start gone, a retried trial its
# checkpoint.
VANISHED = "the search's folder there vanished mid-search (deleted, or unmounted on a node)"
CHECKPOINT_GONE = tune_format.CHECKPOINT_GONE
# What a write to the storage path fails with when the path, not the trial, is at fault.
FAULTS = {
    "No space left on device": "no space left on the device",
    "Disk quota exceeded": "the disk quota is exceeded",
    "Read-only file system": "the file system is read-only",
    tune_format.STORAGE_SETUP_FAILED: VANISHED,
    CHECKPOINT_GONE: VANISHED,
}


def fault_of(error_text: str, restoring: bool = False) -> str | None:
    """The storage fault a trial's error names, or None. A restored search expects the
    checkpoints lost with a vanished folder: those trials start again, they are no fault."""
    faults = {k: v for k, v in FAULTS.items() if not (restoring and k == CHECKPOINT_GONE)}
    return next((what for key, what in faults.items() if key in error_text), None)


def prepare(path: str) -> None:
    """Make the storage path (local) or prove it writable (URI), before any work."""
    if not is_uri(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise InputError(
                f"--storage-path {path} cannot be created ({e.strerror}); "
                "pass a path this cluster's user can write"
            ) from None
        return
    fs, base = _fs(path)
    probe = f"{base}/.rayscale-probe-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except OSError as e:
        raise InputError(
            f"cannot write to --storage-path {path} ({first_line(e)}); check the bucket, "
            "the credentials every node has, and AWS_ENDPOINT_URL for an S3-compatible store"
        ) from None


def check_shared(path: str) -> None:
    """Refuse a local storage path that some worker node does not share with the driver."""
    if is_uri(path):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    alive = [n for n in ray.nodes() if n["Alive"]]
    driver_ip = next((n["NodeManagerAddress"] for n in alive if n["NodeID"] == here), None)
    # A node at the driver's own address is a process on the driver's machine, with its
    # disk (the local provider, Ray's fake multi-node clusters): nothing to probe.
    workers = [
        n
        for n in alive
        if n["NodeID"] != here
        and n["Resources"].get("CPU", 0) > 0
        and n["NodeManagerAddress"] != driver_ip
    ]
    if not workers:
        return
    token = uuid.uuid4().hex
    marker = os.path.join(path, f".rayscale-shared-{token}")
    with open(marker, "w") as f:
        f.write(token)

    @ray.remote(num_cpus=0)
    def sees(p: str) -> str | None:
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            return None

    try:
        refs = [
            sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(marker)
            for n in workers
        ]
        seen = ray.get(refs, timeout=120)
    finally:
        os.remove(marker)
    blind = [n["NodeManagerAddress"] for n, s in zip(workers, seen, strict=True) if s != token]
    if blind:
        raise InputError(
            f"--storage-path {path} is not shared: worker node(s) {', '.join(blind)} cannot see "
            f"what the driver writes there; {SHARED_HINT}"
        )


def keeper(path: str):
    """Read the file at path (local or URI) now; the function returned writes it back if it
    has gone by then, and says whether it did."""
    import pyarrow.fs

    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        data = f.read()

    def put_back() -> bool:
        if fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound:
            return False
        fs.create_dir(p.rsplit("/", 1)[0])
        with fs.open_output_stream(p) as f:
            f.write(data)
        return True

    return put_back


class StateCopy:
    """Whole copies of the search's experiment state (the JSON files Tune writes at the top
    of <storage-path>/<name>), for when the storage path fails.

    Tune overwrites those files in place, so a write that ran out of room leaves one cut
    short, and a restore then starts the search over. `save` keeps each file in memory
    whenever it reads back whole (valid JSON); on a storage fault `persist` writes them to
    the head's own disk, and `job resume`'s `put_back` returns each where the storage
    path's no longer parses, then deletes them. Trials that finished after the kept state's
    save run again; none is lost. Nothing is written to disk but after a fault."""

    def __init__(self, exp_path: str, name: str, every_s: float = 1.0):
        self.exp_path = exp_path
        # This user's own folder, never a shared /tmp path another user could make first
        # and so feed Tune the state (and the pickles) it restores.
        home_state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        self.keep = os.path.join(home_state, "rayscale", "tune-state", name)
        self.every_s, self.last = every_s, 0.0
        self.copies: dict[str, bytes] = {}

    def reset(self) -> None:
        """A new search of this name: copies of an earlier one's are no longer its state."""
        import contextlib
        import shutil

        shutil.rmtree(self.keep, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last search's: the folder goes too
            os.rmdir(os.path.dirname(self.keep))

    def _states(self):
        import pyarrow.fs

        fs, base = _fs(self.exp_path)
        found = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
        return fs, [
            f for f in found if f.is_file and f.base_name.endswith(tune_format.STATE_SUFFIX)
        ]

    def save(self, force: bool = False) -> None:
        import json
        import time

        if not force and time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        try:
            fs, files = self._states()
            for f in files:
                with fs.open_input_stream(f.path) as r:
                    data = r.read()
                json.loads(data)  # whole, or not kept
                self.copies[f.base_name] = data
        except (OSError, ValueError, InputError):
            pass  # a storage fault: the last whole copies stay

    def _private(self) -> bool:
        """Whether the kept copies' folders are this user's alone (not made by another)."""
        for d in (os.path.dirname(self.keep), self.keep):
            st = os.stat(d)
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                print(f"warning: {d} is not this user's alone; its copies are not used", flush=True)
                return False
        return True

    def persist(self) -> None:
        """The storage path failed: keep the copies on the head's disk for `job resume`."""
        os.makedirs(self.keep, mode=0o700, exist_ok=True)
        if not self._private():
            return
        for fname, data in self.copies.items():
            with open(os.path.join(self.keep, fname), "wb") as w:
                w.write(data)

    def put_back(self) -> list[str]:
        """Put back each kept file whose copy on the storage path does not parse; the names.
        The kept copies are deleted after."""
        import json

        if not os.path.isdir(self.keep) or not self._private():
            return []
        fs, files = self._states()
        put = []
        for f in files:
            kept = os.path.join(self.keep, f.base_name)
            if not os.path.isfile(kept):
                continue
            with fs.open_input_stream(f.path) as r:
                try:
                    json.loads(r.read())
                    continue
                except ValueError:
                    pass
            with open(kept, "rb") as src, fs.open_output_stream(f.path) as w:
                w.write(src.read())
            put.append(f.base_name)
        self.reset()
        return put


def write_record(path: str, name: str, text: str) -> str:
    """<path>/<name>/rayscale-result.json, locally or on object storage; returns where it went."""
    if not is_uri(path):
        out = os.path.join(path, name)
        os.makedirs(out, exist_ok=True)
        target = os.path.join(out, "rayscale-result.json")
        with open(target, "w") as f:
            f.write(text)
        return target
    fs, base = _fs(path)
    with fs.open_output_stream(f"{base}/{name}/rayscale-result.json") as f:
        f.write(text.encode())
    return f"{path}/{name}/rayscale-result.json"
