"""The cloud YAMLs' node_config, checked against the clouds' own API schemas, offline:
aws.yaml's against EC2's RunInstances input shape in botocore's bundled service model,
gcp.yaml's against Compute v1's Instance schema in the discovery document that
google-api-python-client bundles (both read from the files of the cloud-SDK venv that
`make test` makes, .venv-s3, at the versions the YAMLs' head_setup_commands install).
An unknown or misspelt field, or a value of the wrong type, fails."""

from __future__ import annotations

import gzip
import json
import re
import subprocess

import pytest
import yaml
from conftest import ROOT, S3_VENV

# Keys Ray's node providers read and remove before the API call (aws/node_provider.py
# `SubnetIds`; gcp/node.py `networkConfig`, `sourceInstanceTemplate`).
RAY_KEYS = {"aws": {"SubnetIds"}, "gcp": {"networkConfig", "sourceInstanceTemplate"}}


def _package_dir(module: str):
    from pathlib import Path

    p = subprocess.run(
        [S3_VENV / "bin" / "python", "-c", f"import {module}, os; print(os.path.dirname({module}.__file__))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(p.stdout.strip())


def _node_configs(name: str) -> dict[str, dict]:
    cfg = yaml.safe_load((ROOT / "cluster" / name).read_text())
    return {t: spec["node_config"] for t, spec in cfg["available_node_types"].items()}


# ---- EC2 (botocore's service model) -------------------------------------------------------


def _ec2_shapes() -> dict:
    # The newest API version, the one boto3 calls.
    model = max((_package_dir("botocore") / "data" / "ec2").glob("*/service-2.json*"))
    raw = model.read_bytes()
    return json.loads(gzip.decompress(raw) if model.suffix == ".gz" else raw)["shapes"]


def ec2_errors(value, shape: str, shapes: dict, path: str) -> list[str]:
    s = shapes[shape]
    kind = s["type"]
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: a mapping wanted ({shape})"]
        out = []
        for k, v in value.items():
            if k not in s["members"]:
                out.append(f"{path}.{k}: not a field of {shape}")
            else:
                out += ec2_errors(v, s["members"][k]["shape"], shapes, f"{path}.{k}")
        return out
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: a list wanted ({shape})"]
        return [e for i, v in enumerate(value) for e in ec2_errors(v, s["member"]["shape"], shapes, f"{path}[{i}]")]  # fmt: skip
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: a string wanted ({shape})"]
        if "enum" in s and value not in s["enum"]:
            return [f"{path}: {value!r} is not one of {shape}'s values"]
        return []
    if kind in ("integer", "long"):
        return (
            []
            if isinstance(value, int) and not isinstance(value, bool)
            else [f"{path}: an integer wanted"]
        )
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: true or false wanted"]
    return []  # timestamps, blobs, maps: none in the kit's files


# ---- Compute v1 (the discovery document) -------------------------------------------------


def _compute_schemas() -> dict:
    doc = _package_dir("googleapiclient") / "discovery_cache" / "documents" / "compute.v1.json"
    return json.loads(doc.read_text())["schemas"]


def gcp_errors(value, schema: dict, schemas: dict, path: str) -> list[str]:
    if "$ref" in schema:
        return gcp_errors(value, schemas[schema["$ref"]], schemas, path)
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: a mapping wanted"]
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        out = []
        for k, v in value.items():
            if k in props:
                out += gcp_errors(v, props[k], schemas, f"{path}.{k}")
            elif extra:
                out += gcp_errors(v, extra, schemas, f"{path}.{k}")
            else:
                out.append(f"{path}.{k}: not a field of {schema.get('id', 'this object')}")
        return out
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: a list wanted"]
        return [e for i, v in enumerate(value) for e in gcp_errors(v, schema["items"], schemas, f"{path}[{i}]")]  # fmt: skip
    if kind == "string":
        # int64 fields travel as strings; the client takes numbers for them.
        ok = isinstance(value, str) or (
            schema.get("format") in ("int64", "uint64") and isinstance(value, int)
        )
        if not ok:
            return [f"{path}: a string wanted"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{path}: {value!r} is not one of {schema['enum']}"]
        return []
    if kind == "integer":
        return (
            []
            if isinstance(value, int) and not isinstance(value, bool)
            else [f"{path}: an integer wanted"]
        )
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: true or false wanted"]
    return []


def _errors(cloud: str, config: dict) -> list[str]:
    config = {k: v for k, v in config.items() if k not in RAY_KEYS[cloud]}
    if cloud == "aws":
        return ec2_errors(config, "RunInstancesRequest", _ec2_shapes(), "node_config")
    schemas = _compute_schemas()
    return gcp_errors(config, schemas["Instance"], schemas, "node_config")


@pytest.mark.parametrize(("cloud", "name"), [("aws", "aws.yaml"), ("gcp", "gcp.yaml")])
def test_every_node_config_is_what_the_clouds_api_takes(cloud, name):
    for node_type, config in _node_configs(name).items():
        assert _errors(cloud, config) == [], f"{name} {node_type}"


@pytest.mark.parametrize(
    ("cloud", "name", "break_it", "said"),
    [
        ("aws", "aws.yaml", lambda c: c.update(InstanceTyp="m5.large"), "InstanceTyp: not a field"),
        ("aws", "aws.yaml", lambda c: c["BlockDeviceMappings"][0]["Ebs"].update(VolumeSize="100"),
         "VolumeSize: an integer wanted"),
        ("aws", "aws.yaml", lambda c: c.update(InstanceType="m5.huge"), "'m5.huge' is not one of"),
        ("gcp", "gcp.yaml", lambda c: c.update(machinetype="n2-standard-2"), "machinetype: not a field"),
        ("gcp", "gcp.yaml", lambda c: c["disks"][0].update(type="SSD"), "'SSD' is not one of"),
        ("gcp", "gcp.yaml", lambda c: c["disks"][0]["initializeParams"].update(diskSizeGB=100),
         "diskSizeGB: not a field"),
    ],
)  # fmt: skip
def test_a_misspelt_field_or_a_wrong_value_fails(cloud, name, break_it, said):
    config = next(iter(_node_configs(name).values()))
    break_it(config)
    assert any(said in e for e in _errors(cloud, config)), _errors(cloud, config)


def test_the_schemas_are_the_sdks_the_yamls_install():
    """The SDK versions the checks read are the ones the YAMLs' head installs."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name, package in (("aws.yaml", "boto3"), ("gcp.yaml", "google-api-python-client")):
        pin = re.search(rf"{package}==([\d.]+)", (ROOT / "cluster" / name).read_text()).group(1)
        assert f'"{package}=={pin}"' in pyproject, f"{package}=={pin} of {name} not in s3test"
