"""make scan's input: the Pods that k8s/'s RayClusters and RayJobs make (checkov does not
look inside custom resources), and the Redis that `--gcs-ft redis` renders, never shipped
as a file.

python scripts/scan_pods.py K8S_DIR OUT_DIR
"""

from __future__ import annotations

import pathlib
import sys

import yaml

from rayscale import manifests
from rayscale.providers import gcs_ft


def write_scan_pods(k8s_dir: str, out_dir: str) -> int:
    """Write the Pods of every manifest under k8s_dir into out_dir; return how many."""
    n = 0
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(pathlib.Path(k8s_dir).rglob("*.yaml")):
        for pod in manifests.scan_pods(yaml.safe_load(f.read_text()) or {}):
            n += 1
            (out / f"{n:02d}-{pod['metadata']['name']}.yaml").write_text(yaml.safe_dump(pod))
    redis = gcs_ft.deployment("rayscale", "ml", gcs_ft.IMAGE)
    policy = gcs_ft.network_policy("rayscale", "ml")
    (out / f"{n + 1:02d}-redis.yaml").write_text(yaml.safe_dump_all([redis, policy]))
    return n + 1


if __name__ == "__main__":
    print(f"{write_scan_pods(sys.argv[1], sys.argv[2])} pods to scan")
