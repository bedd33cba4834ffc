"""Trunk file: schema, demo tenant, peer identification and located config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.datafile import DataFileError
from gateway.registrar.trunks import CarrierTrunk, NumberRange, PeerTrunk, load_trunks, may_present
from gateway.sip.address import Address

ROOT = Path(__file__).resolve().parents[2]


def test_demo_tenant() -> None:
    table = load_trunks(ROOT / "config" / "trunks.yaml")
    for n in range(1, 9):
        cred = table.credential(f"6288000{n}")
        assert cred is not None and cred.password == "acme-iad-secret"
        assert cred.numbers == {f"6288000{n}"}  # a line may register only itself
        assert cred.trunk.name == "acme-iad" and cred.trunk.group == "acme"
    assert table.credential("62880009") is None
    assert table.trunks["acme-iad"].invite_auth == "always"  # lines authenticate their calls
    pbx = table.identify(Address("udp", "127.0.0.1", 5092))
    assert isinstance(pbx, PeerTrunk) and pbx.name == "acme-pbx" and "62881500" in pbx.dids[0]
    carrier = table.identify(Address("udp", "127.0.0.1", 5070))
    assert isinstance(carrier, CarrierTrunk) and carrier.destinations[0].priority == 10
    assert table.identify(Address("tcp", "127.0.0.1", 5092)) is None
    assert table.identify(Address("udp", "127.0.0.2", 5092)) is None
    assert table.identify(Address("udp", "not-an-ip", 5092)) is None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trunks.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_device_credentials_and_from_disambiguation(tmp_path: Path) -> None:
    table = load_trunks(write(tmp_path, """
trunks:
  - name: pbx2
    kind: registering
    group: g
    username: pbx2-user
    password: secret
    lines: [{numbers: "62882000"}]
    pilot: "62882000"
    dids: "62882000-62882099"
  - name: a
    kind: peer
    group: g
    match: [{host: 10.0.0.1, from_host: a.example}]
  - name: b
    kind: peer
    group: g
    match: [{host: 10.0.0.1, from_host: b.example}]
  - name: c
    kind: peer
    group: g
    match: [{network: 10.1.0.0/16, from_users: "1000-1999"}]
  - name: d
    kind: peer
    group: g
    match: [{network: 10.1.0.0/16, from_users: "2000-2999"}]
"""))
    cred = table.credential("pbx2-user")
    assert cred is not None and cred.numbers == {"62882000"}
    assert table.credential("62882000") is None  # the line has no credentials of its own
    assert table.did_pilot("62882042") == "62882000"
    src = Address("udp", "10.0.0.1", 5060)
    assert table.identify(src, from_host="B.example").name == "b"  # type: ignore[union-attr]
    assert table.identify(src, from_host="c.example") is None
    assert table.identify(Address("udp", "10.1.2.3", 5060), from_user="2500").name == "d"  # type: ignore[union-attr]


def test_ambiguous_peers_are_located_errors(tmp_path: Path) -> None:
    path = write(tmp_path, """trunks:
  - name: a
    kind: peer
    group: g
    match: [{network: 127.0.0.0/8}]
  - name: b
    kind: peer
    group: g
    match:
      - {host: 127.0.0.1, port: 5092}
""")
    with pytest.raises(DataFileError) as exc:
        load_trunks(path)
    (problem,) = exc.value.problems
    assert problem.line == 10 and problem.field == "trunks[1].match[0]"
    assert "ambiguous" in problem.message and "'a'" in problem.message


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ('  - {name: a, kind: registering, group: g, lines: [{numbers: "1-2"}]}', "trunks[0]", "password"),
        ('  - {name: a, kind: registering, group: g, username: u, lines: [{numbers: "1", password: p}]}',
         "trunks[0]", "username"),
        ('  - {name: a, kind: registering, group: g, password: p, lines: [{numbers: 123}]}',
         "trunks[0].lines[0].numbers", "quoted"),
        ('  - {name: a, kind: registering, group: g, password: p, lines: [{numbers: "9-1"}]}',
         "trunks[0].lines[0].numbers", "greater"),
        ('  - {name: a, kind: peer, group: g, match: [{host: 1.2.3.4, network: 1.0.0.0/8}]}',
         "trunks[0].match[0]", "exactly one"),
        ('  - {name: a, kind: peer, group: g, match: [{host: 1.2.3.4}], max_cps: 0}',
         "trunks[0].max_cps", "greater than 0"),
        ('  - {name: a, kind: voip, group: g}', "trunks[0].kind", "one of"),
        ('  - {name: a, kind: registering, group: g, password: p, lines: [{numbers: "1"}], invite_auth: x}',
         "trunks[0].invite_auth", "always"),
        ('  - {name: a, kind: peer, group: g, match: [{host: 1.2.3.4}], max_international_calls: -1}',
         "trunks[0].max_international_calls", "greater than or equal"),
        ('  - {name: a, kind: peer, group: g, match: [{host: 1.2.3.4}]}\n'
         '  - {name: a, kind: peer, group: g, match: [{host: 1.2.3.5}]}', "trunks[1].name", "twice"),
        ('  - {name: a, kind: registering, group: g, password: p, lines: [{numbers: "1-3"}]}\n'
         '  - {name: b, kind: registering, group: g, password: p, lines: [{numbers: "3"}]}',
         "trunks[1].lines[0].numbers", "already a line"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, body: str, field: str, needle: str) -> None:
    with pytest.raises(DataFileError) as exc:
        load_trunks(write(tmp_path, "trunks:\n" + body + "\n"))
    problems = exc.value.problems
    assert any(p.field.startswith(field) and needle in p.message for p in problems), problems
    assert all(p.line is not None for p in problems)


def test_number_range() -> None:
    r = NumberRange.parse("0211-0213")
    assert list(r) == ["0211", "0212", "0213"] and len(r) == 3
    assert "0212" in r and "212" not in r and "0214" not in r
    assert NumberRange.parse("+8621").first == "+8621"
    with pytest.raises(ValueError):
        NumberRange.parse("12-123")
    with pytest.raises(ValueError):
        NumberRange.parse("1a")


def test_caller_numbers_a_trunk_may_present() -> None:
    table = load_trunks(ROOT / "config" / "trunks.yaml")
    iad, pbx, carrier = (table.trunks[n] for n in ("acme-iad", "acme-pbx", "carrier"))
    assert may_present(iad, "62880008") and not may_present(iad, "62880009")
    assert may_present(pbx, "62881999") and not may_present(pbx, "62880001")
    assert may_present(carrier, "13800138000")
