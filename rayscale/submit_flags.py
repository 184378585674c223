"""`ray job submit`'s own flags, as `rayscale job submit` takes them: their names and
meanings are Ray's (the Job SDK's `submit_job` arguments), so a user's habits carry over.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rayscale.errors import UserError, read_yaml


@dataclasses.dataclass(frozen=True)
class RaySubmit:
    runtime_env: dict[str, Any] = dataclasses.field(default_factory=dict)
    submission_id: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None

    def given(self) -> list[str]:
        """The flags given, by their names."""
        return [
            "--" + f.name.replace("_", "-")
            for f in dataclasses.fields(self)
            if getattr(self, f.name) not in (None, {}, [])
        ]

    def job_kwargs(self) -> dict[str, Any]:
        """The entrypoint's resources, as submit_job takes them (only those given)."""
        names = ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
                 "entrypoint_resources")  # fmt: skip
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _mapping(text: str, flag: str, what: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UserError(f"{flag} is not JSON ({e.msg})", f"pass {what} as a JSON object") from None
    if not isinstance(doc, dict):
        raise UserError(f"{flag} is not a JSON object", f"pass {what}, e.g. '{{...}}'")
    return doc


def from_flags(
    runtime_env: str | None = None,
    runtime_env_json: str | None = None,
    submission_id: str | None = None,
    metadata_json: str | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
    entrypoint_memory: int | None = None,
    entrypoint_resources: str | None = None,
) -> RaySubmit:
    """The flags, checked as Ray checks them, each bad one in one line naming it."""
    if runtime_env and runtime_env_json:
        raise UserError(
            "--runtime-env and --runtime-env-json both given", "pass one, as `ray job submit` takes"
        )
    env: dict = {}
    if runtime_env:
        env = read_yaml(runtime_env, f"--runtime-env {runtime_env}", "pass a YAML file",
                        "fix the file") or {}  # fmt: skip
        if not isinstance(env, dict):
            raise UserError(
                f"--runtime-env {runtime_env} is not a mapping", "e.g. env_vars: {X: '1'}"
            )
    elif runtime_env_json:
        env = _mapping(runtime_env_json, "--runtime-env-json", "a runtime_env")
    metadata = (
        _mapping(metadata_json, "--metadata-json", "string keys and values")
        if metadata_json
        else {}
    )
    if not all(isinstance(v, str) for v in metadata.values()):
        raise UserError(
            "--metadata-json has a value that is not a string", 'e.g. \'{"team": "ml"}\''
        )
    resources = None
    if entrypoint_resources:
        resources = _mapping(
            entrypoint_resources, "--entrypoint-resources", "resource names and amounts"
        )
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in resources.values()
        ):
            raise UserError(
                "--entrypoint-resources has an amount that is not a number", "e.g. '{\"disk\": 1}'"
            )
    return RaySubmit(env, submission_id, metadata, entrypoint_num_cpus, entrypoint_num_gpus,
                     entrypoint_memory, resources)  # fmt: skip


def runtime_env(kit: dict[str, Any], ray: RaySubmit, bundled: bool) -> dict[str, Any]:
    """The job's runtime env: the user's, with what the kit adds (its working_dir and
    excludes, --env's variables, which win over the user's of the same name)."""
    out = dict(ray.runtime_env)
    if bundled and "working_dir" in out:
        raise UserError(
            "--runtime-env sets a working_dir, but the bundled job runs from its own folder",
            "drop working_dir from it, or run your own script with --working-dir",
        )
    if "working_dir" in kit:  # --working-dir wins over the runtime env's, as with Ray
        out["working_dir"] = kit["working_dir"]
        out["excludes"] = [*out.get("excludes", []), *kit.get("excludes", [])]
    if kit.get("env_vars"):
        out["env_vars"] = {**out.get("env_vars", {}), **kit["env_vars"]}
    return out
