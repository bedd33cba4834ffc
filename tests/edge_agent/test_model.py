"""The desired-state schema and the agent's config file: refused whole, with file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_config
from edge_agent.model import DesiredState
from gateway.config import load_config as load_gateway_config
from gateway.datafile import DataFileError, validate_data
from tests.conftest import PROJECT_ROOT


def test_shipped_config_is_valid() -> None:
    config = load_config(PROJECT_ROOT / "config" / "edge_agent.yaml")
    assert config.desired is not None and config.desired.version >= 1
    assert {t.role for t in config.checks.targets} >= {"operator_link", "core", "customer_server", "device"}
    assert config.reconcile.rtproto == 190
    # Secure by default: TLS with a client certificate, and only signed control obeyed.
    assert config.mqtt is not None and config.mqtt.tls is not None and config.mqtt.tls.cert_file is not None
    assert config.mqtt.port == 8883 and config.control.public_keys
    # The survivable site's local gateway config is a valid gateway config.
    assert config.survivable is not None
    site = load_gateway_config(PROJECT_ROOT / config.survivable.gateway_config)
    assert site.registrar.location_store == "memory" and site.redis.url is not None
    assert site.state_dir / site.charging.spool.directory == PROJECT_ROOT / config.survivable.charging_spool


def test_config_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "site: s1\nmqtt:\n  port: 70000\ndesired:\n  version: 1\n  links:\n    - {name: wan0, mtu: 20}\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFileError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}:3: mqtt.port:" in text
    assert f"{path}:7: desired.links[0].mtu:" in text


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"links": [{"name": "v0", "kind": "veth"}]}, "'peer' is required for veth"),
        (
            {"links": [{"name": "t0", "kind": "vxlan", "vni": 1, "vlan_id": 3}]},
            "'vlan_id' does not apply to vxlan",
        ),
        ({"links": [{"name": "wan0", "peer": "x"}]}, "'peer' does not apply to an existing link"),
        ({"links": [{"name": "a"}, {"name": "a"}]}, "declared twice"),
        (
            {"links": [{"name": "a", "master": "b"}]},
            "not declared",
        ),
        (
            {"links": [{"name": "a", "master": "t"}, {"name": "t", "kind": "vxlan", "vni": 2}]},
            "is not a bridge",
        ),
        ({"addresses": [{"ifname": "x", "address": "10.0.0.1/24"}]}, "not declared in links"),
        ({"links": [{"name": "a"}], "addresses": [{"ifname": "a", "address": "2001:db8::1/64"}]}, "IPv4"),
        ({"routes": [{"dst": "10.0.0.0/8"}]}, "needs a gateway, a dev, or both"),
        ({"routes": [{"dst": "10.0.0.1/8", "gateway": "10.0.0.1"}]}, "not a valid IPv4 network"),
        (
            {
                "routes": [
                    {"dst": "default", "gateway": "10.0.0.1"},
                    {"dst": "0.0.0.0/0", "gateway": "10.0.0.2"},
                ]
            },
            "declared twice",
        ),
        ({"links": [{"name": "this-name-is-too-long"}]}, "at most 15 characters"),
        ({"links": [{"name": "a", "colour": "red"}]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_desired_state_is_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DesiredState.model_validate({"version": 1, **doc})


def test_mqtt_payload_problems_name_the_field() -> None:
    with pytest.raises(DataFileError) as info:
        validate_data(
            DesiredState,
            {"version": -1, "routes": [{"dst": "10.0.0.0/8", "gateway": "x"}]},
            "mqtt:edge/s/desired",
        )
    lines = str(info.value).splitlines()
    assert any(line.startswith("mqtt:edge/s/desired: version:") for line in lines)
    assert any("routes[0].gateway" in line for line in lines)


def test_default_route_and_identity() -> None:
    state = DesiredState.model_validate(
        {
            "version": 2,
            "links": [{"name": "t0", "kind": "vxlan", "vni": 9, "remote": "198.51.100.13"}],
            "routes": [{"dst": "default", "dev": "t0"}],
        }
    )
    assert str(state.routes[0].dst) == "0.0.0.0/0"
    assert state.links[0].identity == (("port", "4789"), ("remote", "198.51.100.13"), ("vni", "9"))
