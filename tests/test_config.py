"""Config validation: every bad setting is a ConfigError naming the flag."""

from __future__ import annotations

from typing import Any

import pytest

from tornado_ws.config import NO_KEY_MESSAGE, Config, ConfigError


def test_defaults_match_the_documented_ones() -> None:
    config = Config(jwt_secret="s" * 32)
    assert (config.host, config.port, config.jwt_algorithms) == ("127.0.0.1", 8888, ("HS256",))
    assert (config.max_message_size, config.jwt_leeway, config.history_size, config.history_ttl) == (
        65536,
        0.0,
        100,
        300.0,
    )


@pytest.mark.parametrize(
    "origins", [("*",), ("https://app.example.com",), ("http://127.0.0.1:8080", "HTTPS://App.Example.com/")]
)
def test_well_formed_origins_are_accepted(origins: tuple[str, ...]) -> None:
    assert Config(jwt_secret="s" * 32, allowed_origins=origins).allowed_origins == origins


def test_no_key_and_no_demo_is_refused_with_a_howto() -> None:
    with pytest.raises(ConfigError) as info:
        Config()
    assert str(info.value) == NO_KEY_MESSAGE
    assert "--jwt-secret" in NO_KEY_MESSAGE and "--demo" in NO_KEY_MESSAGE
    assert Config(demo=True).demo


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"port": 70000}, "--port"),
        ({"port": -1}, "--port"),
        ({"host": ""}, "--host"),
        ({"jwt_secret": ""}, "--jwt-secret"),
        ({"jwt_algorithms": ()}, "--jwt-algorithms"),
        ({"jwt_algorithms": ("none",)}, "--jwt-algorithms"),
        ({"jwt_algorithms": ("RS256",)}, "--jwt-public-key"),
        ({"jwt_secret": None, "jwt_public_key": "k", "jwt_algorithms": ("HS256", "RS256")}, "--jwt-secret"),
        ({"jwt_public_key": "k"}, "--jwt-public-key"),
        ({"jwt_leeway": -1}, "--jwt-leeway"),
        ({"max_message_size": 10}, "--max-message-size"),
        ({"ping_interval": -1}, "--ping-interval"),
        ({"history_size": -1}, "--history-size"),
        ({"shutdown_timeout": -1}, "--shutdown-timeout"),
        ({"rate_limit": -1}, "--rate-limit"),
        ({"rate_burst": 0}, "--rate-burst"),
        ({"max_connections": 0}, "--max-connections"),
        ({"max_connections_per_user": 0}, "--max-connections-per-user"),
        ({"max_outbound_buffer": 10}, "--max-outbound-buffer"),
        ({"max_session_id_length": 2000}, "--max-session-id-length"),
        ({"log_format": "xml"}, "--log-format"),
        ({"jwt_secret": "s" * 31}, "--jwt-secret is too short for HS256: at least 32 bytes"),
        ({"jwt_secret": "s" * 63, "jwt_algorithms": ("HS256", "HS512")}, "at least 64 bytes"),
        ({"jwt_secret": "é" * 15}, "--jwt-secret"),  # 30 bytes, though 15 characters
        ({"allowed_origins": ("app.example.com",)}, "--allowed-origins"),
        ({"allowed_origins": ("https://app.example.com/path",)}, "--allowed-origins"),
        ({"allowed_origins": ("https://app.example.com:99999",)}, "--allowed-origins"),
        ({"allowed_origins": ("https://*.example.com",)}, "--allowed-origins"),
        ({"static_dir": "/does/not/exist"}, "--static-dir"),
    ],
)
def test_bad_settings_name_their_flag(settings: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        Config(**{"jwt_secret": "s" * 64, **settings})
