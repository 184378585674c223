"""One place for versions: pyproject.toml's ranges, requirements.lock's exact pins (made by
`make lock`), and the image's job/requirements.txt generated from that lock."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKED_EXTRAS = ("job", "k8s", "study", "mlflow", "test")  # the Makefile's EXTRAS


def _entries(path) -> list[tuple[str, list[str]]]:
    """(requirement, its --hash values) per entry, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            req, *opts = line.split(" --")
            out.append((req.strip(), [o.strip().removeprefix("hash=") for o in opts]))
    return out


def _pins(path) -> dict[str, str]:
    out = {}
    for line, _ in _entries(path):
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


LOCKS = ("requirements.lock", "job/requirements.txt", "requirements-bootstrap.txt")


def test_every_locked_archive_has_its_sha256():
    for name in LOCKS:
        entries = _entries(ROOT / name)
        assert entries, name
        for req, hashes in entries:
            assert hashes and all(h.startswith("sha256:") and len(h) == 71 for h in hashes), (
                f"{name}: {req} has no sha256: run `make lock`"
            )


def test_the_bootstrap_pins_the_makefiles_pip_and_the_lock_extras_uv():
    make = (ROOT / "Makefile").read_text()
    pip = re.search(r"^PIP_VERSION := (\S+)$", make, re.M).group(1)
    (uv,) = _project()["optional-dependencies"]["lock"]
    assert _pins(ROOT / "requirements-bootstrap.txt") == {
        "pip": pip,
        "uv": next(iter(Requirement(uv).specifier)).version,
    }
    # The venv's first install is pip's, hash-checked; the image's too.
    assert "pip install --quiet --require-hashes -r requirements-bootstrap.txt" in make
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "--require-hashes -r /opt/rayscale/requirements.txt" in dockerfile


def test_an_archive_whose_hash_differs_from_the_lock_is_refused(tmp_path):
    """uv checks the lock's hashes as constraints (make install): one digit changed in
    annotated-types' hashes and the install stops, naming the package."""
    lock = (ROOT / "requirements.lock").read_text()
    start = lock.index("annotated-types==")
    entry = lock[start : lock.index("\n    #", start)]
    tampered = re.sub(r"sha256:(.)", lambda m: "sha256:" + "01"[m.group(1) == "0"], entry)
    (tmp_path / "lock").write_text(lock.replace(entry, tampered))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    run = [str(ROOT / ".venv" / "bin" / "uv"), "pip", "install", "--python"]
    env = {**os.environ, "UV_NATIVE_TLS": "1"}
    bad = subprocess.run(
        [*run, tmp_path / "venv/bin/python", "-c", tmp_path / "lock", "annotated-types"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode != 0 and "annotated-types" in bad.stderr, bad.stderr
    assert "hash" in bad.stderr.lower(), bad.stderr
    good = subprocess.run(
        [*run, tmp_path / "venv/bin/python", "-c", ROOT / "requirements.lock", "annotated-types"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert good.returncode == 0, good.stderr
