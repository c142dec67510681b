"""Ray and fsspec stay optional: importing instkit, its CLI and a local sharded run import no Ray,
and only the engine module names it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import instkit

PACKAGE = Path(instkit.__file__).resolve().parent


def test_only_the_engine_imports_ray() -> None:
    pattern = re.compile(r"^\s*(import ray|from ray)|require\(\s*[\"']ray", re.M)
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if pattern.search(p.read_text()))
    assert users == ["shards/engine.py"]
    assert pattern.search("    ray = require(\"ray\", \"ray\")")  # the check can fail


def test_instkit_the_cli_and_a_local_run_import_no_ray(small_shards: Path) -> None:
    script = (
        "import sys\n"
        "import instkit, instkit.shards, instkit.data.streaming\n"
        "from click.testing import CliRunner\n"
        "from instkit.cli import cli\n"
        f"result = CliRunner().invoke(cli, ['validate', {str(small_shards)!r}, '--workers', '1'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"result = CliRunner().invoke(cli, ['stats', {str(small_shards)!r}, '--workers', '2'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
