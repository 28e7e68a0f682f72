"""The tornado-ws benchmark suite: ``python -m bench --help``; figures in docs/performance.md."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
