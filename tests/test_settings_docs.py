"""The docs' flag tables list exactly the declared settings, with the declared defaults.

A default that is not a literal is written in words, the words the declaration's ``shown`` gives
(``same host as the request``, ``the package's static/``); one read from the environment first is
``env NAME, else <default>``. Backticks are markup and do not count. A row may hold several flags
(``--ping-interval``, ``--ping-timeout``) and then one default for each, or one for all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tornado_ws.config import DECLARED, Config
from tornado_ws.settings import declared, flag, literal, shown_default

_FLAG = re.compile(r"`(--[a-z][a-z0-9-]*)(?: [A-Z]+)?`")
_CELL = re.compile(r"(?<!\\)\|")


def documented_defaults(path: Path, heading: str, separator: str) -> dict[str, str]:
    """Flag -> default cell (without backticks) of the first table under ``heading``."""
    section = path.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in _CELL.split(line.strip().strip("|"))])
    defaults: dict[str, str] = {}
    for row in rows:
        flags = _FLAG.findall(row[0])
        assert flags, f"{path.name}: a row without a flag: {row[0]!r}"
        parts = row[1].split(separator) if len(flags) > 1 else [row[1]]
        parts = parts * len(flags) if len(parts) == 1 else parts
        assert len(parts) == len(flags), f"{path.name}: {row[0]} has {len(parts)} defaults"
        for name, part in zip(flags, parts, strict=True):
            assert name not in defaults, f"{path.name} lists {name} twice"
            defaults[name] = part.replace("`", "").strip()
    return defaults


def declared_defaults() -> dict[str, str]:
    return {flag(field.name): shown_default(field, spec) for cls in DECLARED for field, spec in declared(cls)}


def test_the_readme_table_is_the_declared_settings_with_their_defaults() -> None:
    assert documented_defaults(ROOT / "README.md", "## Configuration", ", ") == declared_defaults()


def test_the_operations_table_lists_every_flag_and_begins_each_default_as_declared() -> None:
    """docs/operations.md says more per default ("…, shipped in the wheel"): it must begin as declared."""
    documented = documented_defaults(ROOT / "docs" / "operations.md", "## Flags and environment", " / ")
    expected = declared_defaults()
    assert sorted(documented) == sorted(expected)
    assert {name: text for name, text in documented.items() if not text.startswith(expected[name])} == {}


@pytest.mark.parametrize(("name", "words"), [(f.name, s.shown) for f, s in declared(Config) if s.shown])
def test_a_default_in_words_names_the_real_one(name: str, words: str) -> None:
    """Words stand for a default that is no literal; they must still name it where it has one."""
    default = Config.__dataclass_fields__[name].default
    assert default is None or literal(default) in words or f"{Path(default).name}/" in words
