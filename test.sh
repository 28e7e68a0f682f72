#!/usr/bin/env bash
# The one test command: lint, types, then the whole suite with a 90 % coverage gate.
# Run it after `pip install -e '.[test]'`. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
python -m ruff check tornado_ws tests bench examples
python -m mypy tornado_ws
lint-imports  # the layers' import rules (setup.cfg [importlinter])
python -m pytest --cov=tornado_ws --cov-report=term-missing --cov-fail-under=90 "$@"
