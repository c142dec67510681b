"""Findings, repairs and the report that holds them (text for people, JSON for programs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from instkit.errors import Location

SEVERITIES = ("error", "warning", "info")

# code -> (severity, one-line explanation). Codes are stable: programs may match on them.
CHECKS: dict[str, tuple[str, str]] = {
    "json-parse": ("error", "the file is not valid JSON (line and column given)"),
    "json-nonfinite": ("error", "NaN or Infinity: not standard JSON, most tools refuse it"),
    "schema-type": ("error", "a field has the wrong type or the document the wrong shape"),
    "schema-missing": ("error", "a required field is missing"),
    "duplicate-image-id": ("error", "two images share an id"),
    "duplicate-annotation-id": ("error", "two annotations share an id"),
    "duplicate-category-id": ("error", "two categories share an id"),
    "duplicate-category-name": ("warning", "two categories share a name"),
    "unknown-image": ("error", "an annotation points at an image id that does not exist"),
    "unknown-category": ("error", "an annotation points at a category id that does not exist"),
    "image-path-escape": ("error", "a file_name resolves outside the image folder"),
    "image-missing": ("error", "the image file does not exist"),
    "image-unreadable": ("error", "the image file cannot be decoded"),
    "image-size-mismatch": ("error", "the image (after EXIF orientation) is not width x height"),
    "polygon-too-few-points": ("error", "a polygon part has fewer than 3 points"),
    "polygon-odd-coordinates": ("error", "a polygon part has an odd number of coordinates"),
    "polygon-4-number-trap": ("error", "a 4-number part: pycocotools reads it as a box, not a polygon"),
    "polygon-nonfinite": ("error", "a polygon coordinate is NaN or infinite"),
    "polygon-self-intersection": ("warning", "a polygon part is not simple (shapely says invalid)"),
    "polygon-outside-image": ("warning", "polygon vertices lie outside the image"),
    "rle-size-mismatch": ("error", "an RLE's size is not the image's [height, width]"),
    "rle-counts-sum": ("error", "an RLE's counts do not sum to height*width"),
    "rle-invalid": ("error", "an RLE's counts cannot be decoded"),
    "mask-empty": ("error", "the mask covers no pixel"),
    "bbox-invalid": ("error", "bbox is not [x, y, w, h] with w, h > 0"),
    "bbox-mismatch": ("warning", "bbox differs from the mask's tight box beyond tolerance"),
    "area-mismatch": ("warning", "area differs from the mask's pixel count beyond tolerance"),
    "crowd-area-quirk": ("info", "crowd area differs from its RLE pixel count (as in COCO's release)"),
    "iscrowd-invalid": ("error", "iscrowd is not 0 or 1"),
    "iscrowd-geometry": ("warning", "iscrowd disagrees with the geometry (crowd polygon / multi-part)"),
    "keypoints-count": ("error", "keypoints length differs from 3 x the category's keypoint names"),
    "keypoints-visibility": ("error", "a keypoint visibility is not 0, 1 or 2"),
    "num-keypoints-mismatch": ("warning", "num_keypoints differs from the count of labelled keypoints"),
    "keypoints-outside-image": ("warning", "a labelled keypoint lies outside the image"),
    "category-unused": ("info", "a category has no annotation"),
    "image-no-annotations": ("info", "an image has no annotation"),
}


@dataclass(frozen=True)
class Finding:
    """One problem: a stable ``code``, its ``severity``, a one-line message and where it is."""

    code: str
    severity: str
    message: str
    location: Location = field(default_factory=Location)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "location": self.location.as_dict()}


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
