"""A gateway subprocess with the operations API on a free port, real Redis, the demo tenant's
trunks (ports moved to free ones) and a small JSON client for the API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file
from tests.support.servers import free_port, free_udp_tcp_port

ADMIN = "test-admin-token-0123456789"
READER = "test-read-token-0123456789"
TOKENS = [
    {"name": "ops-admin", "role": "admin", "token": ADMIN},
    {"name": "ops-read", "role": "read", "token": READER},
]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    text: str


@dataclass
class Api:
    """A JSON client for the operations API (blocking; the gateway is another process)."""

    base: str
    token: str | None = ADMIN

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | bool | None = True,
        raw: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        headers = {"Accept": "application/json"}
        use = self.token if token is True else (None if token is False else token)
        if use:
            headers["Authorization"] = f"Bearer {use}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload, hdrs = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            status, payload, hdrs = exc.code, exc.read(), dict(exc.headers)
        text = payload.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = None
        return Reply(status, parsed, hdrs, text)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.call("GET", path, **kwargs)


def api_gateway(
    workdir: Path,
    *,
    redis_url: str | None,
    carrier_port: int | None = None,
    pbx_port: int | None = None,
    extra: dict[str, Any] | None = None,
    sip_overrides: dict[str, Any] | None = None,
) -> tuple[GatewayProcess, Api]:
    workdir.mkdir(parents=True, exist_ok=True)
    carrier, pbx = carrier_port or free_udp_tcp_port(), pbx_port or free_udp_tcp_port()
    trunks = demo_trunks_file(workdir / "trunks.yaml", carrier=carrier, pbx=pbx)
    api_port = free_port()
    config: dict[str, Any] = {
        "api": {"enabled": True, "host": "127.0.0.1", "port": api_port, "tokens": TOKENS},
        "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
        "call": {"status_socket": str(workdir / "call.sock"), "attempt_timeout": 1.0, "drain_grace": 1.0},
        "charging": {"tariffs": str(PROJECT_ROOT / "config" / "tariffs.yaml")},
        **(extra or {}),
    }
    if redis_url is not None:
        config["redis"] = {"url": redis_url}
    gw = GatewayProcess(workdir, extra_config=config, sip_overrides=sip_overrides or {})
    return gw, Api(f"http://127.0.0.1:{api_port}")


def wait_api(api: Api, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.get("/api/health", token=False, timeout=1.0).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the operations API did not answer")


def redis_url_of(gw: GatewayProcess) -> str:
    config: dict[str, Any] = yaml.safe_load(gw.config_path.read_text())
    return str(config["redis"]["url"])
