"""Ray Job Submission: submit job/ (as the working_dir, or by path where the nodes share
this machine's disk), follow it, read its result.

Knows nothing of providers: it is handed a URL and a token (an Endpoint). The job reports
back with one ``RAYSCALE_RESULT {json}`` line in its log; nothing else is parsed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rayscale import submit_flags
from rayscale.endpoint import IMAGE_JOB_DIGEST, Endpoint, api_timeout
from rayscale.errors import Unreachable, UserError
from rayscale.job_files import (
    EXCLUDES,
    USER_EXCLUDES,
    check_job_dir,
    check_size,
    default_job_dir,
    localise_paths,
    path_on_nodes,
)
from rayscale.state import command, results_dir
from rayscale.submit_flags import RaySubmit

RESULT_MARKER = "RAYSCALE_RESULT "
PROGRESS_MARKER = "RAYSCALE_PROGRESS "
ERROR_MARKER = "RAYSCALE_ERROR "
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# How long a job being followed may be out of reach: a port-forward that drops is back
# within seconds (rayscale.forward restarts it); a head that is gone is reported after this.
RECONNECT_GRACE = 60.0
AGENT_GRACE = 30.0


def image_job_digest(endpoint: Endpoint, timeout: float = 120.0) -> str | None:
    """The digest of the job the head's image holds, or None where it holds none (a node
    without the kit's image) or the head cannot be asked. Read once at `up` by a one-line
    job (no runtime env), on providers where rayscale cannot exec into the head (Kubernetes
    pods, cloud VMs): it saves every later job the upload."""
    j = Jobs(endpoint)
    try:
        job_id = j._client.submit_job(
            entrypoint=f"cat {IMAGE_JOB_DIGEST} 2>/dev/null || true",
            submission_id=f"rayscale-image-probe-{int(time.time() * 1000)}",
            metadata={"rayscale": "which job the image holds"},
        )
        if j.wait(job_id, timeout, poll=0.2) != "SUCCEEDED":
            return None
        log = j.logs(job_id)
    except Exception:  # an older head, an API error: jobs are uploaded, as before
        return None
    # The log may open with the job manager's own lines; the digest is a line of its own.
    found = [x for x in log.splitlines() if re.fullmatch(r"[0-9a-f]{64}", x.strip())]
    return found[-1].strip() if found else None


@dataclass
class Jobs:
    """A thin, error-translating wrapper over Ray's JobSubmissionClient."""

    endpoint: Endpoint

    @functools.cached_property
    def _client(self):
        # Connecting checks the address and token, so it waits until a call needs it:
        # local mistakes (a job dir too large) are reported before any network error.
        return _connect(self.endpoint)

    def submit(
        self,
        job_args: list[str],
        job_dir: Path | None = None,
        submission_id: str | None = None,
        metadata: dict | None = None,
        env: dict[str, str] | None = None,
        ray: RaySubmit | None = None,
    ) -> str:
        """env: variables for the driver and every trial process on every node (the job's
        runtime env), e.g. an object store's endpoint; Ray's agents log it and holders of
        the token read it, so no secrets. ray: `ray job submit`'s own flags."""
        job_dir = Path(job_dir or default_job_dir())
        if self.endpoint.shares_disk and not given(job_args, "--storage-path"):
            job_args = [*job_args, "--storage-path", storage_path(job_args, self.endpoint)]
        on_nodes = path_on_nodes(self.endpoint, job_dir)
        check_job_dir(job_dir, upload=on_nodes is None)
        entrypoint = shlex.join(["python", "tune_xgboost.py", *localise_paths(job_args)])
        runtime_env: dict = {}
        if on_nodes:
            # The nodes have the job already: no upload, and no runtime env, which costs
            # each worker process Ray starts for the job ~0.7 s here (docs/benchmarks.md).
            # It runs in job/ as it would in the uploaded copy (relative paths alike).
            entrypoint = f"cd {shlex.quote(on_nodes)} && {entrypoint}"
        else:
            runtime_env = {"working_dir": str(job_dir), "excludes": EXCLUDES}
        return self._submit(entrypoint, runtime_env, env, submission_id, metadata, ray, True)

    def submit_command(
        self,
        command: list[str],
        working_dir: Path | None = None,
        submission_id: str | None = None,
        metadata: dict | None = None,
        env: dict[str, str] | None = None,
        ray: RaySubmit | None = None,
    ) -> str:
        """Any entrypoint, as `ray job submit --working-dir DIR -- COMMAND` takes it: one
        argument is a shell line, several are quoted and joined. The working dir is uploaded
        on every provider, as `ray job submit` does (trial processes import the script's own
        modules from it), VCS data and caches left out."""
        if not command:
            raise UserError("no command to run", "pass it after --, e.g. -- python my_tune.py")
        entrypoint = command[0] if len(command) == 1 else shlex.join(command)
        runtime_env: dict = {}
        if working_dir is not None:
            working_dir = Path(working_dir).expanduser()
            if not working_dir.is_dir():
                raise UserError(
                    f"--working-dir {working_dir} is not a folder",
                    "pass the folder that holds your script",
                )
            check_size(working_dir, USER_EXCLUDES)
            runtime_env = {"working_dir": str(working_dir), "excludes": USER_EXCLUDES}
        return self._submit(entrypoint, runtime_env, env, submission_id, metadata, ray)

    def _submit(
        self, entrypoint, runtime_env, env, submission_id, metadata, ray=None, bundled=False
    ) -> str:
        ray = ray or RaySubmit()
        if env:
            runtime_env["env_vars"] = dict(env)
        runtime_env = submit_flags.runtime_env(runtime_env, ray, bundled)
        deadline = time.monotonic() + AGENT_GRACE
        while True:
            try:
                return self._call(
                    self._client.submit_job,
                    timeout=max(600.0, api_timeout()),  # it uploads the working dir
                    entrypoint=entrypoint,
                    runtime_env=runtime_env or None,
                    submission_id=ray.submission_id or submission_id,
                    metadata={**(metadata or {}), **ray.metadata},
                    **ray.job_kwargs(),
                )
            except RuntimeError as e:
                # Ray's own advice for this one: the head's job agent is (re)registering,
                # seen right after the autoscaler removed nodes.
                if "No available agent" not in str(e):
                    raise
                if time.monotonic() > deadline:
                    raise UserError(
                        f"the head's job agent did not take the job in {AGENT_GRACE:.0f} s",
                        "submit again; if it persists read the head's dashboard_agent.log",
                    ) from None
                time.sleep(1.0)

    def resume(
        self,
        name: str,
        job_args: list[str],
        job_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Resubmit a search that lost its head: Tune restores it from its storage path.

        job_args must be the original ones (same data, seed, --storage-path): the trials
        already finished are kept, those in flight resume from their checkpoints.
        """
        args = [a for a in job_args if a != "--restore"]
        if given(args, "--name"):
            raise UserError(
                f"pass the run name as {command('job resume NAME')}, not --name",
                "remove --name from the job args",
            )
        return self.submit([*args, "--name", name, "--restore"], job_dir, env=env)

    def status(self, job_id: str) -> str:
        return str(self._call(self._client.get_job_status, job_id))

    def info(self, job_id: str):
        """Ray's JobDetails: status, start_time / end_time (epoch ms), the Ray job id."""
        return self._call(self._client.get_job_info, job_id)

    def logs(self, job_id: str) -> str:
        return self._call(self._client.get_job_logs, job_id)

    def stop(self, job_id: str) -> bool:
        return self._call(self._client.stop_job, job_id)

    def delete(self, job_id: str) -> None:
        """Delete an ended job's record and log from the cluster, as `ray job delete`."""
        try:
            self._call(self._client.delete_job, job_id)
        except RuntimeError as e:
            if "non-terminal" not in str(e):
                raise
            raise UserError(
                f"job {job_id} has not ended: Ray deletes only ended jobs",
                f"stop it first: {command(f'job stop {job_id}')}",
            ) from None

    def list(self):
        return self._call(self._client.list_jobs)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[dict], None] | None = None,
        poll: float = 0.5,
        on_log: Callable[[str], None] | None = None,
    ) -> str:
        """Follow the job until it ends; hand each progress record to on_progress, and each
        line of its log to on_log.

        With on_progress the log is streamed (Ray's tail_job_logs): each line arrives once
        as the driver writes it, where downloading the whole log every beat costs the head
        more as the log grows. Without it only the status is polled."""
        deadline = time.monotonic() + timeout if timeout else None
        lines_seen = 0
        lost_since: float | None = None

        def on_line(n: int, line: str) -> None:
            nonlocal lines_seen
            if n <= lines_seen:  # a reconnected stream starts again from the first line
                return
            lines_seen = n
            if on_log:
                on_log(line)
            if on_progress and line.startswith(PROGRESS_MARKER):
                on_progress(json.loads(line[len(PROGRESS_MARKER) :]))

        while True:
            left = deadline - time.monotonic() if deadline else None
            try:
                if (on_progress or on_log) and (left is None or left > 0):
                    self._stream(job_id, on_line, left)
                status = self.status(job_id)
                lost_since = None
            except Unreachable:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > RECONNECT_GRACE:
                    raise
                time.sleep(1.0)
                continue
            if status in TERMINAL:
                if on_progress or on_log:
                    # The Job API may close the stream before a quick job's last lines
                    # reach it: what it did not send comes from the whole log, once.
                    for n, line in enumerate(self.logs(job_id).splitlines(), 1):
                        on_line(n, line)
                return status
            if deadline and time.monotonic() > deadline:
                raise UserError(
                    f"job {job_id} still {status} after {timeout:.0f} s",
                    f"follow it with {command(f'job logs {job_id}')} or stop it with {command(f'job stop {job_id}')}",
                )
            time.sleep(poll)

    def follow(self, job_id: str, timeout: float | None, on_log: Callable[[str], None]) -> str:
        """Stream a command's log until it ends; its end status, a failure as a UserError."""
        status = self.wait(job_id, timeout, on_log=on_log)
        if status != "SUCCEEDED":
            check_ended_well(job_id, self.logs(job_id), status)
        return status

    def _stream(self, job_id: str, on_line: Callable[[int, str], None], timeout) -> None:
        """Feed on_line(line number, line) each complete line of the job's log until the Job
        API closes the stream (the job ended, or the connection broke) or timeout passes."""
        import asyncio

        import aiohttp

        idle = api_timeout()

        async def follow() -> None:
            n, buf = 0, ""
            chunks = self._client.tail_job_logs(job_id).__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), idle)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    # Silent a while, or a half-open connection: the caller asks the status
                    # (bounded) and streams again if the job still runs.
                    return
                buf += chunk
                *lines, buf = buf.split("\n")
                for line in lines:
                    n += 1
                    on_line(n, line)
            if buf:
                on_line(n + 1, buf)

        async def bounded() -> None:
            try:
                await asyncio.wait_for(follow(), timeout)
            except TimeoutError:
                pass

        try:
            asyncio.run(bounded())
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            if isinstance(e, aiohttp.WSServerHandshakeError):
                if e.status in (401, 403):
                    raise _auth_error(self.endpoint, sent=bool(self.endpoint.token)) from None
                if e.status == 404:
                    return  # the status call after this names the unknown job
            if isinstance(e, RuntimeError) and "closed unexpectedly" not in str(e):
                raise
            raise _unreachable(self.endpoint) from None

    def result(self, job_id: str, status: str | None = None) -> dict:
        """The record of a job that succeeded; else a UserError naming the job's own error."""
        return parse_result(job_id, self.logs(job_id), status or self.status(job_id))

    def _call(self, fn, *args, **kwargs):
        return _translated(self.endpoint, fn, *args, **kwargs)


def env_vars(specs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """--env NAME (its value here) or NAME=VALUE, as a dict; a NAME unset here is an error."""
    out = {}
    for spec in specs:
        name, eq, value = spec.partition("=")
        if not name or not name.replace("_", "a").isalnum():
            raise UserError(
                f"--env {spec!r} is not NAME or NAME=VALUE", "e.g. --env AWS_ENDPOINT_URL"
            )
        if not eq:
            if name not in os.environ:
                raise UserError(
                    f"--env {name}: {name} is not set here", f"set it, or pass --env {name}=VALUE"
                )
            value = os.environ[name]
        out[name] = value
    return out


def check_ended_well(job_id: str, text: str, status: str) -> None:
    """A command's job that did not succeed, as one line with its log's last lines."""
    if status != "SUCCEEDED":
        raise _failed(job_id, text, status)


# The job's --storage-path when none is given, as the head expands it.
JOB_STORAGE = "~/rayscale_results"


def storage_path(job_args: list[str], endpoint: Endpoint) -> str:
    """Where the bundled job writes its Tune output: --storage-path; else, where the nodes
    are this machine, results/ beside the user; else the job's default on the head."""
    given_path = flag_value(localise_paths(job_args), "--storage-path")
    if given_path is not None:
        return given_path.rstrip("/")
    return str(results_dir()) if endpoint.shares_disk else JOB_STORAGE


def given(args: list[str], flag: str) -> bool:
    """Whether the job args set FLAG (`--flag value` or `--flag=value`)."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


def flag_value(args: list[str], flag: str) -> str | None:
    """FLAG's value in the job args (`--flag value` or `--flag=value`), else None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _failed(job_id: str, text: str, status: str) -> UserError:
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:]) or "no output"
    return UserError(
        f"job {job_id} ended {status} ({tail[:300]})",
        f"read the whole log with {command(f'job logs {job_id}')}",
    )


def parse_result(job_id: str, text: str, status: str) -> dict:
    if status == "SUCCEEDED":
        for line in reversed(text.splitlines()):
            if line.startswith(RESULT_MARKER):
                return json.loads(line[len(RESULT_MARKER) :])
    for line in reversed(text.splitlines()):
        if line.startswith(ERROR_MARKER):
            said = json.loads(line[len(ERROR_MARKER) :])
            if said.get("kind") == "search":
                raise UserError(
                    f"job {job_id} failed: {said['error']}",
                    f"the record is in its storage path; read {command(f'job logs {job_id}')}",
                )
            raise UserError(f"job {job_id} rejected its input: {said['error']}")
    if status == "SUCCEEDED":
        raise _failed(job_id, text, "SUCCEEDED without a result")
    raise _failed(job_id, text, status)


def _connect(endpoint: Endpoint):
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    import logging

    from ray.job_submission import JobSubmissionClient

    # Ray's SDK logs each package upload, and the end of each log stream, at INFO, on
    # loggers with levels of their own; the launcher reports progress itself.
    for name in list(logging.root.manager.loggerDict):
        if name == "ray" or name.startswith("ray."):
            logging.getLogger(name).setLevel(logging.WARNING)
    return _translated(endpoint, JobSubmissionClient, endpoint.url, headers=headers)


def _unreachable(endpoint: Endpoint) -> Unreachable:
    return Unreachable(
        f"cannot reach the Ray dashboard at {endpoint.url}",
        f"is the cluster up ({command('cluster status')})? check --address",
    )


def _auth_error(endpoint: Endpoint, sent: bool) -> UserError:
    if not sent:
        return UserError(
            f"the cluster at {endpoint.url} requires a token and none was sent",
            "pass --token-file FILE or set RAY_AUTH_TOKEN",
        )
    return UserError(
        f"the cluster at {endpoint.url} rejected the token",
        "pass the cluster's token with --token-file FILE or RAY_AUTH_TOKEN",
    )


def _bounded(fn, timeout: float, *args, **kwargs):
    """fn(*args, **kwargs), or TimeoutError after `timeout` s: Ray's SDK takes no timeout,
    so the call runs in a thread of its own, left behind (a daemon) if it hangs."""
    box: dict = {}

    def call() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            box["error"] = e

    t = threading.Thread(target=call, daemon=True, name="rayscale-job-api")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def _translated(endpoint: Endpoint, fn, *args, timeout: float | None = None, **kwargs):
    """Call into Ray's client, bounded in time, and turn its errors into one line a user
    can act on."""
    import requests
    from ray.exceptions import AuthenticationError

    timeout = timeout or api_timeout()
    try:
        return _bounded(fn, timeout, *args, **kwargs)
    except TimeoutError:
        raise Unreachable(
            f"the Ray dashboard at {endpoint.url} did not answer within {timeout:.0f} s",
            f"is the cluster up ({command('cluster status')})? a job it runs goes on; raise "
            "RAYSCALE_API_TIMEOUT for a slow link",
        ) from None
    except AuthenticationError:
        if not endpoint.token:
            # Ray refuses before connecting when token auth is on and no token is found, so
            # an address where nothing listens must be told apart here.
            try:
                requests.get(f"{endpoint.url}/api/version", timeout=5)
            except requests.exceptions.RequestException:
                raise _unreachable(endpoint) from None
            raise _auth_error(endpoint, sent=False) from None
        raise _auth_error(endpoint, sent=True) from None
    except (requests.exceptions.ConnectionError, ConnectionError):
        raise _unreachable(endpoint) from None
    except RuntimeError as e:
        msg = str(e)
        if (
            "401" in msg
            or "Missing authentication token" in msg
            or "Authentication required" in msg
        ):
            raise _auth_error(endpoint, sent=False) from None
        if "403" in msg or "Invalid authentication token" in msg or "invalid or incorrect" in msg:
            raise _auth_error(endpoint, sent=True) from None
        if "does not exist" in msg or "404" in msg:
            raise UserError(
                f"{msg.splitlines()[0]}", f"list jobs with {command('job list')}"
            ) from None
        if "Failed to connect" in msg or "Connection refused" in msg or "Timed out" in msg:
            raise _unreachable(endpoint) from None
        if "already exists" in msg:  # a --submission-id the cluster has seen (Ray: a 500)
            said = next(ln for ln in msg.splitlines() if "already exists" in ln)
            raise UserError(
                said.split("Error: ")[-1].strip(), "pass another --submission-id"
            ) from None
        code = re.search(r"status code (5\d\d)", msg)
        if code:
            # e.g. 504 when the head's job agent cannot reach the GCS: the cluster, not the
            # request, is at fault.
            raise UserError(
                f"the Job API at {endpoint.url} answered {code.group(1)}",
                "the head's job agent is down or stuck: read dashboard_agent.log in the "
                f"head's session logs, then {command('cluster down')} / `up` and submit again",
            ) from None
        raise
