"""Layering rules from DESIGN.md that can be checked mechanically."""

from __future__ import annotations

import subprocess
import sys


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
