"""``python -m tornado_ws`` on uvloop's event loop, to measure that optional speedup
without touching tornado-ws itself (asyncio.run picks the policy's loop)."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from tornado_ws.cli import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
