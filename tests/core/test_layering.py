"""The core stays I/O-free: importing it must not load Tornado or Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "tornado_ws.core",
    "tornado_ws.core.registry",
    "tornado_ws.core.stream",
    "tornado_ws.core.protocol",
    "tornado_ws.core.server_messages",
    "tornado_ws.core.presence",
    "tornado_ws.core.session",
    "tornado_ws.core.frames",
    "tornado_ws.core.ratelimit",
    "tornado_ws.errors",
]
#: frames.py unmasks with Tornado's C extension: a leaf function with no I/O, and importing it
#: loads only Tornado's package stub (a version and a lazy __getattr__), nothing else of Tornado.
ALLOWED = ["tornado", "tornado.speedups"]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io_library(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {{'tornado', 'redis'}} and m not in {ALLOWED})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} pulls in {out}"


def test_package_exports_load_lazily() -> None:
    import tornado_ws

    assert tornado_ws.connect.__module__ == "tornado_ws.client"
    assert tornado_ws.Registry.__module__ == "tornado_ws.core.registry"
    assert tornado_ws.Hub.__module__ == "tornado_ws.hub"
    with pytest.raises(AttributeError):
        tornado_ws.nothing_here  # noqa: B018
