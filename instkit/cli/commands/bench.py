"""``instkit bench``: run the benchmark scripts and record their figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def find_benchmarks_dir(start: Path | None = None) -> Path | None:
    """The repository's ``benchmarks/`` folder: beside the package, or above the current dir."""
    candidates = [Path(__file__).resolve().parents[3]]
    here = (start or Path.cwd()).resolve()
    candidates.extend([here, *here.parents])
    for root in candidates:
        folder = root / "benchmarks"
        if (folder / "common.py").is_file():
            return folder
    return None


def discover(folder: Path) -> dict[str, Path]:
    return {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))}


def summary_table(payloads: list[dict[str, Any]]) -> str:
    """Markdown lines: one row per target claim of each benchmark."""
    lines = ["| benchmark | claim | value | target | met | outputs agree | machine | date |",
             "|---|---|---|---|---|---|---|---|"]
    for payload in payloads:
        machine = payload.get("machine", {})
        where = f"{machine.get('cpus', '?')} CPUs" + (
            f", {machine['gpu']}" if machine.get("gpu") else "")
        mode = " (quick)" if payload.get("quick") else ""
        for target in payload.get("targets", []) or [{"claim": "-", "value": "-", "target": "-",
                                                       "met": None}]:
            value = target["value"]
            shown = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
            met = {True: "yes", False: "**no**", None: "-"}[target.get("met")]
            lines.append(
                f"| {payload['name']}{mode} | {target['claim']} | {shown} | {target['target']} | "
                f"{met} | {'yes' if payload.get('agree') else '**no**'} | {where} | "
                f"{payload.get('date', '')} |"
            )
    return "\n".join(lines)


def write_summary(doc: Path, table: str) -> None:
    from instkit.io.files import atomic_write

    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n## Latest `instkit bench` run\n\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_write(doc) as handle:
        handle.write(text)


@click.command("bench")
@click.argument("names", nargs=-1)
@click.option("--quick", is_flag=True, help="Small inputs: each benchmark in under a minute.")
@click.option("--list", "list_only", is_flag=True, help="List the benchmarks and exit.")
@click.option("--collect", is_flag=True,
              help="Run nothing: rebuild the summary from the JSON results already written.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the JSON results [default: benchmarks/results].")
@click.option("--dir", "bench_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Benchmarks folder [default: the checkout's benchmarks/].")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown page whose summary table is updated [default: docs/benchmarks.md "
                   "beside benchmarks/; not updated with --quick unless given].")
def command(names: tuple[str, ...], quick: bool, list_only: bool, collect: bool,
            out_dir: Path | None, bench_dir: Path | None, doc: Path | None) -> None:
    """Run every script in benchmarks/ (or the NAMES given), each in its own process.

    Each script checks that instkit's outputs agree with the peer's before it times anything,
    and writes JSON; this command collects them and writes the summary table (machine, date,
    instkit vs each peer as a ratio) into docs/benchmarks.md.
    """
    folder = bench_dir.resolve() if bench_dir else find_benchmarks_dir()
    if folder is None:
        raise click.ClickException(
            "no benchmarks/ folder found: run from an instkit checkout (benchmarks are not "
            "installed with the package)")
    available = discover(folder)
    if list_only:
        for name, path in available.items():
            click.echo(f"{name:12s} {path}")
        return
    unknown = [n for n in names if n not in available]
    if unknown:
        raise click.BadParameter(f"unknown benchmark(s) {unknown}; available: {sorted(available)}",
                                 param_hint="NAMES")
    chosen = list(names) or list(available)
    out_dir = out_dir or folder / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    payloads, failed = [], []
    for name in chosen:
        out = out_dir / f"{name}{'-quick' if quick else ''}.json"
        if collect:
            if out.exists():
                payloads.append(json.loads(out.read_text()))
            else:
                click.echo(f"   {name}: no results at {out}", err=True)
            continue
        click.echo(f"== {name}{' (quick)' if quick else ''}", err=True)
        start = time.perf_counter()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = [sys.executable, str(available[name]), "--out", str(out)] + (
            ["--quick"] if quick else [])
        code = subprocess.call(args, env=env)
        took = time.perf_counter() - start
        if code != 0 or not out.exists():
            failed.append(name)
            click.echo(f"   {name}: FAILED (exit {code}) after {took:.0f} s", err=True)
            continue
        payload = json.loads(out.read_text())
        payloads.append(payload)
        click.echo(f"   {name}: done in {took:.0f} s, outputs agree: {payload['agree']}", err=True)
    table = summary_table(payloads)
    click.echo(table)
    target_doc = doc or (None if quick else folder.parent / "docs" / "benchmarks.md")
    if target_doc is not None and payloads:
        write_summary(target_doc, table)
        click.echo(f"summary written to {target_doc}", err=True)
    if failed:
        from instkit.cli import EXIT_FINDINGS

        click.echo(f"Error: benchmark(s) failed: {', '.join(failed)}", err=True)
        sys.exit(EXIT_FINDINGS)
