"""The attack catalogue of docs/security.md: one test (or one parametrized case) per attack.

Every attack runs while a canary keeps working (tests/canary.py): two members of another
session exchange messages in the background during the attack and once more after it. An
attack passes when the attacker is refused or cut, nothing reaches anyone it must not reach,
no ERROR is logged (the autouse fixture below) and the canary never missed a round.
"""

from __future__ import annotations

import pytest

from tests.conftest import QUIET_PINGS, test_config
from tornado_ws.config import Config


@pytest.fixture(autouse=True)
def _no_errors_logged(no_errors_logged: None) -> None:
    """An attack may be refused or cut, never crash a handler."""


@pytest.fixture
def config() -> Config:
    """Raw-socket attackers never answer pings: the server's ping timeout stays out of their way
    unless a test is about it (and sets its own)."""
    return test_config(**QUIET_PINGS)
