#!/usr/bin/env python3
"""A stand-in for `kubectl port-forward` (a fake): `... port-forward ... svc/NAME L:8265`
relays 127.0.0.1:L to the port (or host:port) $FAKE_KUBE_TARGETS (a JSON file) maps NAME
to, with tests/tcp_proxy.py. `apply --server-side` says it applied (the emulator has the
CRDs already); any other kubectl command fails, as a missing cluster would."""

import json
import os
import sys

args = sys.argv[1:]
if "apply" in args and "--server-side" in args:
    print("customresourcedefinition.apiextensions.k8s.io/rayclusters.ray.io serverside-applied")
    sys.exit(0)
if "port-forward" not in args:
    sys.exit("fake kubectl: only port-forward is supported")
svc = next(a for a in args if a.startswith("svc/"))[len("svc/") :]
local = int(next(a for a in args if a.endswith(":8265")).split(":")[0])
targets = json.load(open(os.environ["FAKE_KUBE_TARGETS"]))
if svc not in targets:
    sys.exit(f'error: services "{svc}" not found')
print(f"Forwarding from 127.0.0.1:{local} -> 8265", flush=True)
proxy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcp_proxy.py")
host, _, port = str(targets[svc]).rpartition(":")
os.execv(sys.executable, [sys.executable, proxy, str(local), host or "127.0.0.1", port])
