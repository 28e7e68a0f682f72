"""static/tornado-ws.d.ts compiles against a typed page that uses every call (typed-example.ts),
with the TypeScript compiler that tests/browser/package-lock.json pins (`npm ci --prefix tests/browser`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TSC = HERE / "node_modules" / ".bin" / "tsc"


@pytest.fixture
def tsc() -> Path:
    """The pinned compiler; under CI=true its absence fails the run (.ci/run installs it)."""
    if not TSC.exists() or shutil.which("node") is None:
        message = f"{TSC} is missing: npm ci --prefix tests/browser (needs node and npm)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return TSC


def compile_project(tsc: Path, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tsc), "--noEmit", "--pretty", "false", "-p", str(project)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_declarations_compile_against_the_typed_example(tsc: Path) -> None:
    result = compile_project(tsc, HERE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compiler_refuses_a_misuse(tsc: Path, tmp_path: Path) -> None:
    """The check can fail: wrong calls are errors, so the declarations are not `any` in disguise."""
    sdk = HERE.parent.parent / "static" / "tornado-ws.d.ts"
    (tmp_path / "misuse.ts").write_text(
        f'import {{ connect }} from "{sdk.with_suffix("").with_suffix(".js")}";\n'
        'const conn = connect("ws://h", { token: 42 });\n'  # a token is a string or a function
        'const room = conn.join("s");\n'
        'const state: "live" = conn.state;\n'  # not one of the four states
        "room.setPresence(true);\n"  # a state is an object
        'room.on("message", (m) => m.sequence);\n'  # no such field
        "const seq: string = await room.publish({});\n"  # resolves with a number
        "export {};\n"
    )
    options = {
        "target": "es2022",
        "module": "es2022",
        "moduleResolution": "bundler",
        "lib": ["es2022", "dom"],
        "strict": True,
        "noEmit": True,
        "skipDefaultLibCheck": True,
        "types": [],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps({"compilerOptions": options, "files": ["misuse.ts"]}))
    result = compile_project(tsc, tmp_path)
    errors = [line for line in result.stdout.splitlines() if "misuse.ts(" in line]
    assert result.returncode != 0
    assert [line.split("(", 2)[1].split(",")[0] for line in errors] == ["2", "4", "5", "6", "7"], result.stdout
