#!/usr/bin/env python3
"""A stand-in for kind (a fake) over the Kubernetes emulator: `get clusters` lists what
`create cluster` made, `create cluster --config F` keeps F where the emulator reads the
node's mounts ($FAKE_KIND_DIR/config.yaml), `delete cluster` forgets the cluster and
leaves a marker the test turns into the emulator's delete_node(); `load` succeeds."""

import os
import shutil
import sys
from pathlib import Path

args = sys.argv[1:]
d = Path(os.environ["FAKE_KIND_DIR"])
d.mkdir(parents=True, exist_ok=True)
clusters = d / "clusters"
verb = " ".join(args[:2])
if verb == "get clusters":
    print(clusters.read_text() if clusters.exists() else "", end="")
elif verb == "create cluster":
    shutil.copy(args[args.index("--config") + 1], d / "config.yaml")
    clusters.write_text(args[args.index("--name") + 1] + "\n")
elif verb == "delete cluster":
    clusters.unlink(missing_ok=True)
    (d / "deleted").touch()
elif args[:1] != ["load"]:
    sys.exit(f"fake kind: {verb} is not supported")
