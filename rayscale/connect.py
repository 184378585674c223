"""Which cluster a command talks to: an explicit address, else the one in the state dir."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from pathlib import Path

from rayscale import providers, report
from rayscale.endpoint import Endpoint
from rayscale.errors import UserError
from rayscale.state import StateDir


def read_token(token_file: str | None) -> str | None:
    path = token_file or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as e:
            raise UserError(
                f"cannot read token file {path}: {e.strerror}", "pass a readable --token-file"
            ) from None
        if not token:
            raise UserError(f"token file {path} is empty", "pass the cluster's token file")
        return token
    return os.environ.get("RAY_AUTH_TOKEN") or None


def normalise_address(address: str) -> str:
    url = address if "://" in address else f"http://{address}"
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(
            f"bad address {address!r}",
            "pass the dashboard / Job API URL, e.g. --address http://127.0.0.1:8265",
        )
    try:
        _ = parsed.port  # raises on a port that is not a number in range
    except ValueError:
        raise UserError(
            f"bad port in address {address!r}",
            "pass the dashboard / Job API URL, e.g. --address http://127.0.0.1:8265",
        ) from None
    return url.rstrip("/")


def endpoint(address: str | None, token_file: str | None, state: StateDir) -> Endpoint:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address and os.environ.get("RAY_ADDRESS", "auto") not in ("auto", ""):
        address = os.environ["RAY_ADDRESS"]
    if address:
        ep = Endpoint(normalise_address(address), read_token(token_file))
        if ep.token is None and asks_no_token(ep.url):
            report.say(
                f"warning: the cluster at {ep.url} asks for no token: anyone who reaches this "
                "address can run code on it (start it with RAY_AUTH_MODE=token)",
                err=True,
            )
        return ep
    ep = providers.recorded(state, address_too=True).endpoint()
    return dataclasses.replace(ep, token=read_token(token_file) or ep.token) if token_file else ep


def asks_no_token(url: str) -> bool:
    """Whether the Job API lists jobs to a request without a token (Ray's default: auth off).
    Unreachable or refusing: False, and the command's own call says why."""
    import requests

    try:
        return requests.get(f"{url}/api/jobs/", timeout=10).status_code == 200
    except requests.exceptions.RequestException:
        return False
