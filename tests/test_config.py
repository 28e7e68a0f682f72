"""Config validation: every bad setting is a ConfigError naming the flag."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tornado_ws.config import NO_KEY_MESSAGE, Config, ConfigError
from tornado_ws.settings import declared


def test_defaults_match_the_documented_ones() -> None:
    config = Config(jwt_secret="s" * 32)
    assert (config.host, config.port, config.jwt_algorithms) == ("127.0.0.1", 8888, ("HS256",))
    assert (config.max_message_size, config.jwt_leeway, config.history_size, config.history_ttl) == (
        65536,
        0.0,
        100,
        300.0,
    )


def test_every_field_is_a_declared_setting() -> None:
    """A plain field would have no flag, no help and no row in the README."""
    assert [f.name for f in dataclasses.fields(Config)] == [f.name for f, _ in declared(Config)]


def test_secrets_stay_out_of_repr_and_errors() -> None:
    secret, token = "a-secret-" * 4, "a-token-" * 3
    config = Config(jwt_secret=secret, metrics_token=token)
    assert secret not in repr(config) and token not in repr(config)
    with pytest.raises(ConfigError, match="--metrics-token must be at least 16 characters") as info:
        Config(jwt_secret=secret, metrics_token="short-one")
    assert "short-one" not in str(info.value)


def test_an_echoed_url_hides_its_password() -> None:
    with pytest.raises(ConfigError, match="--broker") as info:
        Config(jwt_secret="s" * 32, broker="http://user:hunter2@127.0.0.1:6379")
    assert "hunter2" not in str(info.value) and "127.0.0.1:6379" in str(info.value)


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
        ({"ping_timeout": -1}, "--ping-timeout"),
        ({"history_size": -1}, "--history-size"),
        ({"history_ttl": -1}, "--history-ttl"),
        ({"max_sessions_per_org": 0}, "--max-sessions-per-org"),
        ({"max_connections_per_org": -1}, "--max-connections-per-org"),
        ({"broker": "redis"}, "--broker"),
        ({"workers": 0}, "--workers"),
        ({"workers": 2}, "--workers above 1 needs --broker"),
        ({"metrics_token": ""}, "--metrics-token"),
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
