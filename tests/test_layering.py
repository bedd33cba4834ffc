"""Layering rules from DESIGN.md that can be checked mechanically.

The import rules read every import statement with ``ast`` (tests/support/import_graph.py):
function-level and TYPE_CHECKING-only imports count like the others.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.import_graph import Edge, edges, modules

GATEWAY = "gateway"
# The composition root and the command line: the only modules that may see every subsystem,
# the operations API included (DESIGN.md rule 8).
ROOT_MODULES = ("gateway.cli", "gateway.runtime_cli", "gateway.node", "gateway.config", "gateway.__main__")
UPPER = ("gateway.call", "gateway.switchboard", "gateway.mgmt")


@dataclass(frozen=True)
class Rule:
    """Modules under ``importer`` import nothing under ``forbidden`` but what is under ``allowed``."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    allowed: tuple[str, ...] = ()

    def broken_by(self, edge: Edge) -> bool:
        return (
            _under(edge.source, (self.importer,))
            and _under(edge.target, self.forbidden)
            and not _under(edge.target, (self.importer, *self.allowed))
        )


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


RULES = [
    Rule("gateway.sip", (GATEWAY,), "rule 1: the SIP core is sans-I/O and knows nothing of the gateway"),
    Rule("gateway.sip", ("asyncio", "socket", "selectors", "time"),
         "rules 1-2: the SIP core does no I/O and reads no clock (it is fed bytes and `now`)"),
    Rule("gateway.media", (GATEWAY,), "media (RTP, SDP, DTMF, prompts) is a library the switchboard uses"),
    Rule("gateway.transport", (GATEWAY,), "transport adapters are thin: bytes in and out of the SIP core",
         allowed=("gateway.sip", "gateway.metrics")),
    Rule("gateway.app", ("gateway.registrar", "gateway.routing", "gateway.charging", "gateway.accounts",
                         *UPPER),
         "the SIP endpoint sits below its transaction users"),
    Rule("gateway.routing", (*UPPER, "gateway.registrar", "gateway.charging", "gateway.accounts"),
         "dialplans are pure and compiled: call control uses them, not the reverse"),
    Rule("gateway.charging", UPPER, "charging is told about calls; it does not know call control"),
    Rule("gateway.billing", UPPER, "billing loads charging events; it does not know call control"),
    Rule("gateway.accounts", (*UPPER, "gateway.registrar"), "account states are asked by call control"),
    Rule("gateway.registrar", (*UPPER, "gateway.routing"), "the registrar serves call control"),
    Rule("gateway.security", UPPER, "the edge guard runs before call control"),
    Rule("gateway.call", ("gateway.mgmt", "gateway.switchboard"),
         "rule 8: call control is the core; applications (the switchboard) and the API sit on it"),
    Rule("gateway.switchboard", ("gateway.mgmt",), "the operations API reads the switchboard"),
    Rule("gateway.edge", UPPER, "the operations side of the edge only signs and follows messages"),
    Rule(GATEWAY, ("gateway.mgmt",), "nothing but the composition root and the CLI sees the API",
         allowed=ROOT_MODULES),
    Rule("edge_agent", (GATEWAY,), "the edge agent is a separate program (it shares the YAML loader only)",
         allowed=("gateway.datafile",)),
]


def _settings_rule_broken(edge: Edge) -> bool:
    """A ``settings`` module (one config section) imports nothing of the gateway but other
    sections: loading a section must not load a subsystem (rule 8, each sees only its own)."""
    return (
        edge.source.startswith("gateway.")
        and edge.source.endswith(".settings")
        and _under(edge.target, (GATEWAY,))
        and not edge.target.endswith(".settings")
    )


@pytest.fixture(scope="module")
def graph() -> list[Edge]:
    return edges([GATEWAY, "edge_agent"])


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.importer}-not-{'+'.join(r.forbidden)}")
def test_import_rule(rule: Rule, graph: list[Edge]) -> None:
    # A module under the composition root's names is allowed what the root is (see ROOT_MODULES).
    broken = [e for e in graph if rule.broken_by(e) and not _under(e.source, ROOT_MODULES)]
    assert not broken, f"{rule.why}:\n" + "\n".join(f"  {e}" for e in broken)


def test_settings_sections_import_only_settings(graph: list[Edge]) -> None:
    broken = [e for e in graph if _settings_rule_broken(e)]
    assert not broken, "a settings section imports a subsystem:\n" + "\n".join(f"  {e}" for e in broken)


def test_a_rule_matches_whole_package_names() -> None:
    rule = Rule("gateway.sip", (GATEWAY,), "why", allowed=("gateway.metrics",))
    here = Path(__file__)
    assert rule.broken_by(Edge("gateway.sip.message", "gateway.call.b2bua", here, 1))
    assert rule.broken_by(Edge("gateway.sip", "gateway", here, 1))
    assert not rule.broken_by(Edge("gateway.sip.message", "gateway.sip.uri", here, 1))
    assert not rule.broken_by(Edge("gateway.sip.message", "gateway.metrics", here, 1))
    assert not rule.broken_by(Edge("gateway.sipx", "gateway.call", here, 1))


def test_sip_core_loads_no_io_or_clock_modules() -> None:
    """Importing every module of gateway.sip loads neither asyncio nor socket (sans-I/O rule)."""
    code = (
        "import pkgutil, importlib, sys, gateway.sip as p\n"
        "for m in pkgutil.walk_packages(p.__path__, 'gateway.sip.'): importlib.import_module(m.name)\n"
        "bad = [m for m in ('asyncio', 'socket', 'selectors') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"gateway.sip loaded: {out.stdout.strip()}"


def test_only_the_root_and_clis_import_the_whole_configuration(graph: list[Edge]) -> None:
    """Each subsystem receives its own section (DESIGN.md rule 8): ``gateway.config``, every
    section with the API tokens, is imported only by the composition root and the CLIs."""
    broken = [
        e for e in graph
        if e.target == "gateway.config" and not _under(e.source, ROOT_MODULES)
        and not e.source.endswith(".cli")
    ]
    shown = "\n".join(f"  {e}" for e in broken)
    assert not broken, f"imports gateway.config outside the root and the CLIs:\n{shown}"


# What writes a SIP message (RFC 3261 §7): the builders of gateway.sip.message.
MESSAGE_BUILDERS = frozenset({"make_response", "Request", "Response"})


def _builds_messages(path: Path) -> list[str]:
    """Where ``path`` imports ``make_response`` or calls a message builder (``Request(...)``,
    ``Response(...)``, ``make_response(...)``, also through a module attribute)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "gateway.sip.message":
            found += [f"{path.name}:{node.lineno} imports make_response"
                      for alias in node.names if alias.name == "make_response"]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in MESSAGE_BUILDERS:
                found.append(f"{path.name}:{node.lineno} calls {name}(...)")
    return found


def test_the_switchboard_builds_no_sip_message() -> None:
    """The switchboard is an application of the call core (issue 18): it decides, the core
    writes every request and answer (gateway.call.legs: ``answer``, ``Legs``)."""
    broken = [
        where
        for module, path in modules([GATEWAY]).items()
        if _under(module, ("gateway.switchboard",))
        for where in _builds_messages(path)
    ]
    assert not broken, "the switchboard builds SIP messages:\n" + "\n".join(f"  {b}" for b in broken)


def test_the_message_builder_scan_finds_a_builder(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from gateway.sip.message import Request, make_response\n"
        "import gateway.sip.message as m\n"
        "r = m.make_response(x, 481)\n"
        "q = Request('BYE', 'sip:a@b')\n"
    )
    assert _builds_messages(probe) == [
        "probe.py:1 imports make_response",
        "probe.py:3 calls make_response(...)",
        "probe.py:4 calls Request(...)",
    ]
