"""One place for versions: pyproject.toml's ranges, requirements.lock's exact pins (made by
`make lock`), and the image's job/requirements.txt generated from that lock."""

from __future__ import annotations

import tomllib

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKED_EXTRAS = ("job", "k8s", "study", "mlflow", "test")  # the Makefile's EXTRAS


def _pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # exactly one ==, nothing else
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            out[canonicalize_name(req.name)] = spec.version
    return out


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_lock_satisfies_every_range_it_locks():
    project = _project()
    lock = _pins(ROOT / "requirements.lock")
    wanted = [*project["dependencies"]]
    for extra in LOCKED_EXTRAS:
        wanted += project["optional-dependencies"][extra]
    for line in wanted:
        req = Requirement(line)
        if req.name == "rayscale":  # test pulls in the other extras
            continue
        if req.marker and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(lock[name]), (
            f"{req.name}: locked {lock[name]} is outside {req.specifier}; run `make lock`"
        )


def test_the_image_installs_the_locked_versions():
    lock = _pins(ROOT / "requirements.lock")
    image = _pins(ROOT / "job" / "requirements.txt")
    for name, version in image.items():
        assert lock.get(name) == version, f"{name}: image {version}, lock {lock.get(name)}"
    # The job's own requirements are all there; what only the launcher needs is not.
    project = _project()
    for line in (
        project["optional-dependencies"]["job"] + project["optional-dependencies"]["mlflow"]
    ):
        req = Requirement(line)
        if not req.marker or req.marker.evaluate({"sys_platform": "linux"}):
            assert canonicalize_name(req.name) in image, f"{req.name} missing from the image"
    for launcher_only in ("kubernetes", "matplotlib", "pytest"):
        assert launcher_only not in image
