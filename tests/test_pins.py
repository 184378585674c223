"""One place for versions: the image's job/requirements.txt must match pyproject.toml."""

from __future__ import annotations

import re

import tomllib
from conftest import ROOT


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].split(";")[0].strip()
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s]+)$", line)
        if m:
            out[m.group(1).lower()] = m.group(3)
    return out


def test_image_requirements_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The image also carries the optional MLflow client, so --mlflow works on every provider.
    kit = _pins(project["dependencies"] + project["optional-dependencies"]["mlflow"])
    image = _pins((ROOT / "job" / "requirements.txt").read_text().splitlines())
    assert image, "no pins found in job/requirements.txt"
    for name, version in image.items():
        assert kit.get(name) == version, f"{name}: image {version}, pyproject {kit.get(name)}"
    # Every job requirement is pinned exactly.
    assert all(
        "==" in line
        for line in (ROOT / "job" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
