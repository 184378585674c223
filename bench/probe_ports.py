"""`make probe`: bring up a local cluster (head + 2 workers) and, where a Docker engine and
the kit's image are there, a docker one; probe every port each listens on (see
bench/exposure.py) from this machine with and without the token and from a network
namespace next to it; write results/reliability/ports.json and print the table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import exposure
from rayscale import procs

CLI = [str(Path(sys.executable).parent / "rayscale")]


def _cli(state: Path, *args: str) -> None:
    subprocess.run([*CLI, *args, "--state-dir", str(state)], check=True, timeout=600)


def _tree(rec: dict) -> set[int]:
    return set(
        procs.tree(pr["pid"] for pr in [rec["head"]["proc"], *[w["proc"] for w in rec["workers"]]])
    )


@contextlib.contextmanager
def _cluster(*up_args: str) -> Iterator[tuple[dict, str]]:
    """A cluster brought up through the CLI in a temp state dir: (its record, its token)."""
    with tempfile.TemporaryDirectory(prefix="rayscale-probe-") as d:
        state = Path(d)
        _cli(state, "cluster", "up", *up_args)
        try:
            yield (
                json.loads((state / "cluster.json").read_text()),
                (state / "auth_token").read_text().strip(),
            )
        finally:
            _cli(state, "cluster", "down")


def _probed(rows: list[exposure.Port], token: str) -> list[dict]:
    """Each port with and without the token, then from the namespace where one can be made."""
    rows = [exposure.with_and_without_token(r, token) for r in rows]
    seen: dict[int, str] = {}
    if not exposure.why_no_namespace():
        with exposure.namespace() as ns:
            seen = ns.connect([r.port for r in rows])
    for r in rows:
        r.from_outside = seen.get(r.port, "not probed")
    return exposure.table(rows)


def local(workers: int) -> dict:
    with _cluster("--provider", "local", "--workers", str(workers)) as (rec, token):
        ports = _probed(exposure.listening(_tree(rec)), token)
    return {"provider": "local", "workers": workers, "ports": ports}


def docker(image: str, workers: int) -> dict | None:
    exe = os.environ.get("RAYSCALE_DOCKER", "docker")
    if subprocess.run([exe, "image", "inspect", image], capture_output=True).returncode:
        print(f"probe: no docker engine or no image {image}: docker provider not probed")
        return None
    up = ("--provider", "docker", "--image", image, "--workers", str(workers))
    with _cluster(*up) as (rec, token):
        published = subprocess.run(
            [exe, "port", rec["head"]["name"]], capture_output=True, text=True, check=True
        ).stdout
        rows = [
            exposure.Port(int(port), ip, f"head container {inside}", ip == "127.0.0.1")
            for inside, ip, port in re.findall(r"^(\S+) -> (\S+):(\d+)$", published, re.M)
        ]
        ports = _probed(rows, token)
    return {"provider": "docker", "workers": workers, "ports": ports}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/reliability")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image", default=os.environ.get("RAYSCALE_IMAGE", ""))
    args = ap.parse_args()
    runs = [local(args.workers)]
    if args.image:
        runs.append(docker(args.image, args.workers))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "namespace": exposure.why_no_namespace() or "probed from a network namespace (veth pair)",
        "runs": [r for r in runs if r],
    }
    (out / "ports.json").write_text(json.dumps(doc, indent=2) + "\n")
    for run in doc["runs"]:
        print(f"\n{run['provider']} ({run['workers']} workers)")
        print("| port | process | bound | protocol | no token | token | from outside |")
        print("|---|---|---|---|---|---|---|")
        for p in run["ports"]:
            print(
                f"| {p['port']} | {p['process']} | {p['bound']} | {p['protocol']} "
                f"| {p['without_token']} | {p['with_token']} | {p['from_outside']} |"
            )
    reached = [p for r in doc["runs"] for p in r["ports"] if p["from_outside"] == "open"]
    # Reached from outside is allowed for a server that refuses a client without the
    # token, and for Ray's read-only metrics exporters; anything else fails the probe.
    bad = [p for p in reached if not guarded(p)]
    print(f"\nwrote {out / 'ports.json'}: {sum(len(r['ports']) for r in doc['runs'])} ports, "
          f"{len(reached)} reached from the network, {len(bad)} of them unguarded")  # fmt: skip
    sys.exit(1 if bad else 0)


def guarded(p: dict) -> bool:
    return p["without_token"] in ("UNAUTHENTICATED", "401", "403") or p["protocol"] == "metrics"


if __name__ == "__main__":
    main()
