"""Findings, repairs and the report that holds them (text for people, JSON for programs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from instkit.errors import Location
from instkit.validate.rules import CHECKS, SEVERITIES, Finding

# The codes, severities and explanations live in the rulebook (instkit.validate.rules).
__all__ = ["CHECKS", "SEVERITIES", "Change", "Finding", "Report"]


@dataclass(frozen=True)
class Change:
    """One repair made by ``--fix``: what, where, the value before and after (JSON values)."""

    what: str
    location: Location
    before: Any = None
    after: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "location": self.location.as_dict(),
                "before": self.before, "after": self.after}


def _short(value: Any, limit: int = 70) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Report:
    """What ``validate_file`` found: ``findings``, and ``changes`` when a repair was written."""

    file: str | None
    findings: list[Finding] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    images_checked: bool = False
    fixed_file: str | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def by_code(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for finding in self.findings:
            out.setdefault(finding.code, []).append(finding)
        return out

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def as_dict(self) -> dict[str, Any]:
        summary = {code: len(items) for code, items in sorted(self.by_code().items())}
        return {
            "file": self.file,
            "ok": self.ok,
            "counts": self.counts,
            "images_checked": self.images_checked,
            "summary": {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES},
            "by_code": summary,
            "findings": [f.as_dict() for f in self.findings],
            "changes": [c.as_dict() for c in self.changes],
            "fixed_file": self.fixed_file,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, default=str)

    def to_text(self, max_per_code: int = 20) -> str:
        """A summary table (one row per check), then the details grouped by check."""
        lines = [f"instkit validate: {self.file}"]
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        if counts:
            lines.append(f"  {counts}; image files {'checked' if self.images_checked else 'not checked (no --images)'}")
        groups = self.by_code()
        order = sorted(groups, key=lambda c: (SEVERITIES.index(groups[c][0].severity), c))
        if groups:
            width = max(len(c) for c in groups)
            lines += ["", f"  {'severity':<8}  {'check':<{width}}  {'count':>6}  explanation",
                      f"  {'-' * 8}  {'-' * width}  {'-' * 6}  {'-' * 11}"]
            for code in order:
                explanation = CHECKS.get(code, ("", ""))[1]
                lines.append(f"  {groups[code][0].severity:<8}  {code:<{width}}  "
                             f"{len(groups[code]):>6}  {explanation}")
            for code in order:
                items = groups[code]
                lines += ["", f"[{items[0].severity}] {code} ({len(items)})"]
                for finding in items[:max_per_code]:
                    where = finding.location.describe() if finding.location else ""
                    where = where.replace(f"file {self.file}, ", "") if self.file else where
                    lines.append(f"  - {finding.message}" + (f"  [{where}]" if where else ""))
                if len(items) > max_per_code:
                    lines.append(f"  ... and {len(items) - max_per_code} more (use --format json for all)")
        if self.changes:
            lines += ["", f"repairs written to {self.fixed_file} ({len(self.changes)} changes):"]
            for change in self.changes[: max_per_code * 5]:
                where = change.location.describe()
                where = where.replace(f"file {self.file}, ", "") if self.file else where
                lines.append(f"  - {change.what} [{where}]: "
                             f"{_short(change.before)} -> {_short(change.after)}")
            if len(self.changes) > max_per_code * 5:
                lines.append(f"  ... and {len(self.changes) - max_per_code * 5} more (use --format json)")
        n_err, n_warn = len(self.errors), len(self.warnings)
        n_info = len(self.findings) - n_err - n_warn
        lines += ["", f"{'FAILED' if n_err else 'OK'}: {n_err} error(s), {n_warn} warning(s), {n_info} info"]
        return "\n".join(lines)
