"""What a cluster leaves open to the network: every port its processes listen on, where it
is bound, whether it answers a client without the cluster's token, and whether a machine
next to this one (a network namespace of its own, joined to the host by a veth pair) can
connect to it at all. Used by tests/test_ports.py and `make probe` (bench/probe_ports.py).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import psutil

# One real method per Ray gRPC server, each harmless with an empty request. A server
# answers UNIMPLEMENTED for methods it does not serve; the one it serves answers
# UNAUTHENTICATED without the token, OK with it.
GRPC_METHODS = {
    "gcs": "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "node manager": "/ray.rpc.NodeManagerService/GetSystemConfig",
    "object manager": "/ray.rpc.ObjectManagerService/Pull",
    "agent": "/ray.rpc.ReporterService/HealthCheck",
    # Every worker process (trial actors, idle workers, job drivers) serves one too.
    "core worker": "/ray.rpc.CoreWorkerService/NumPendingTasks",
}
AUTH_HEADER = "authorization"


@dataclass
class Port:
    port: int
    bound: str  # the listening address, e.g. 127.0.0.1
    process: str
    loopback: bool
    protocol: str = ""  # "grpc <server>" or "http"
    without_token: str = ""  # what a client without the token gets
    with_token: str = ""
    from_outside: str = ""  # "refused" / "open" from another network namespace

    @property
    def host(self) -> str:
        """Where this machine reaches it: its address, or loopback for a wildcard bind."""
        return "127.0.0.1" if self.bound in ("0.0.0.0", "::", "*") else self.bound


def _name(p: psutil.Process) -> str:
    """The process's name; for a Python script (Ray's dashboard, monitor), the script's."""
    name = p.name()
    if name.startswith("python"):
        scripts = [a for a in p.cmdline()[1:] if a.endswith(".py")]
        if scripts:
            return os.path.basename(scripts[0])
    return name


def listening(pids: set[int]) -> list[Port]:
    """The TCP sockets the given processes listen on, one row per port."""
    rows: dict[int, Port] = {}
    for c in psutil.net_connections("tcp"):
        if c.status != psutil.CONN_LISTEN or c.pid not in pids:
            continue
        ip = c.laddr.ip.removeprefix("::ffff:")  # IPv4-mapped, as gRPC binds
        try:
            name = _name(psutil.Process(c.pid))
        except psutil.NoSuchProcess:
            continue
        loop = ipaddress.ip_address(ip).is_loopback
        if c.laddr.port in rows:  # the same port on v4 and v6: open if either is
            loop = loop and rows[c.laddr.port].loopback
        rows[c.laddr.port] = Port(c.laddr.port, ip, name, loop)
    return sorted(rows.values(), key=lambda r: r.port)


def grpc_call(host: str, port: int, method: str, token: str | None) -> str:
    """The status code a unary call with an empty request gets, with or without the token."""
    import grpc

    md = ((AUTH_HEADER, f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(b"", metadata=md, timeout=5)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


def _http(host: str, port: int, token: str | None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{host}:{port}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except (OSError, ValueError, http.client.HTTPException) as e:
        return type(e).__name__  # e.g. BadStatusLine: not HTTP/1


def _metrics(host: str, port: int) -> bool:
    """Whether the port serves Prometheus metrics to anyone (Ray's metrics exporters)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            return r.read(6) in (b"# HELP", b"# TYPE")
    except (OSError, ValueError, http.client.HTTPException):
        return False


def with_and_without_token(row: Port, token: str, host: str | None = None) -> Port:
    """Fill protocol / without_token / with_token: the gRPC server it is (the method it
    does not answer UNIMPLEMENTED), or else HTTP's answer to /api/version ("metrics" for
    a Prometheus exporter, which answers anyone)."""
    host = host or row.host
    for server, method in GRPC_METHODS.items():
        try:
            without = grpc_call(host, row.port, method, None)
        except Exception:  # not gRPC at all
            break
        if without not in ("UNIMPLEMENTED", "UNAVAILABLE", "INTERNAL"):
            row.protocol = f"grpc {server}"
            row.without_token, row.with_token = without, grpc_call(host, row.port, method, token)
            return row
    row.without_token, row.with_token = _http(host, row.port, None), _http(host, row.port, token)
    # A gRPC service none of GRPC_METHODS names answers HTTP/1 with an HTTP/2 frame.
    row.protocol = "other" if row.without_token == "BadStatusLine" else "http"
    if row.without_token == "200" and _metrics(host, row.port):
        row.protocol = "metrics"
    return row


_CONNECT = """
import json, socket, sys
host, ports = sys.argv[1], json.loads(sys.argv[2])
out = {}
for p in ports:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, p))
        out[p] = "open"
    except ConnectionRefusedError:
        out[p] = "refused"
    except OSError as e:
        out[p] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


@dataclass
class Namespace:
    """A network namespace joined to the host by a veth pair: a machine next to this one."""

    name: str
    host_ip: str  # the host's end of the pair, which the namespace reaches

    def connect(self, ports: list[int], host: str | None = None) -> dict[int, str]:
        """Try a TCP connection to each port of the host from inside the namespace."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", _CONNECT,
             host or self.host_ip, json.dumps(ports)],
            capture_output=True, text=True, timeout=30 + 4 * len(ports), check=True,
        )  # fmt: skip
        return {int(k): v for k, v in json.loads(out.stdout).items()}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """Make the namespace and its veth pair (root needed), and remove both on exit."""
    tag = f"rs{os.getpid() % 100000}"
    octet = os.getpid() % 250 + 1  # 10.213.<octet>.0/30: distinct per process
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    made = []
    try:
        _ip("netns", "add", tag)
        made.append(("netns", "delete", tag))
        _ip("link", "add", f"{tag}h", "type", "veth", "peer", "name", f"{tag}n")
        made.append(("link", "delete", f"{tag}h"))
        _ip("link", "set", f"{tag}n", "netns", tag)
        _ip("addr", "add", f"{host_ip}/30", "dev", f"{tag}h")
        _ip("link", "set", f"{tag}h", "up")
        _ip("-n", tag, "addr", "add", f"{ns_ip}/30", "dev", f"{tag}n")
        _ip("-n", tag, "link", "set", f"{tag}n", "up")
        _ip("-n", tag, "link", "set", "lo", "up")
        yield Namespace(tag, host_ip)
    finally:
        for args in reversed(made):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _ip(*args)


def why_no_namespace() -> str | None:
    """None if this process can make a network namespace, else why not."""
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    if not any(
        os.access(os.path.join(d, "ip"), os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin")
    ):
        return "`ip` (iproute2) is not installed"
    return None


def table(rows: list[Port]) -> list[dict]:
    return [asdict(r) for r in rows]
