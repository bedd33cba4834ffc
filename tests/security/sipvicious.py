"""Run the Debian ``sipvicious`` tools (svmap, svwar, svcrack) from a chosen loopback address.

svwar and svcrack 0.3.3 do not pass ``-b`` on to their socket and bind to every interface, so
the kernel gives them 127.0.0.1 as their source. The tests need an attacker address of their
own (127.0.0.1 is a trusted trunk address in the demo tenant), so the tool's entry point
(``sipvicious.<tool>:main``, what /usr/bin/<tool> calls) runs under Debian's Python with
``socket.bind`` to the wildcard address redirected to ``SV_SOURCE``; the tool is otherwise
unchanged.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.servers import require_binary

SIPVICIOUS = Path("/usr/share/sipvicious")

_SHIM = """
import importlib, os, socket, sys
source = os.environ["SV_SOURCE"]
_bind = socket.socket.bind
def bind(self, address):
    host, *rest = address
    return _bind(self, (source if host in ("", "0.0.0.0") else host, *rest))
socket.socket.bind = bind
tool = sys.argv[1]
sys.argv = [tool, *sys.argv[2:]]
sys.path.insert(0, sys.argv.pop(1))
sys.exit(importlib.import_module("sipvicious." + tool).main())
"""


def run_tool(tool: str, source: str, args: list[str], *, cwd: Path, timeout: float = 60) -> str:
    """``tool`` (svmap, svwar, svcrack) with ``args`` from ``source``; its combined output."""
    require_binary(tool)
    command = ["/usr/bin/python3", "-c", _SHIM, tool, str(SIPVICIOUS), *args]
    env = {**os.environ, "SV_SOURCE": source, "HOME": str(cwd)}  # sessions land under $HOME/.sipvicious
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    return result.stdout + result.stderr
