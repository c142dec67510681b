"""COCO linter and repair: ``validate_file`` / ``validate_document`` and ``--fix``.

Every finding has a stable code (see ``CHECKS`` and docs/validate.md), a severity (error /
warning / info), a one-line message and a ``Location`` (file, JSON path, image_id, annotation id).
The checks walk the raw JSON, so they work on files that ``read_coco`` refuses. The rules (code,
severity, error class, limits) live once in ``instkit.validate.rules``, which ``read_coco``, the
results and Hugging Face readers and ``--fix`` use too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from instkit.errors import InstkitError, JSONParseError, Location
from instkit.io.files import atomic_write, same_file
from instkit.validate.checks import check_document
from instkit.validate.repair import repair_document
from instkit.validate.report import CHECKS, Change, Finding, Report
from instkit.validate.rules import DEFAULT_LIMITS, RULES, Limits, Rule, load_document


def _counts(document: Any) -> dict[str, int]:
    if not isinstance(document, dict):
        return {}
    return {key: len(document[key]) for key in ("images", "annotations", "categories")
            if isinstance(document.get(key), list)}


def validate_document(document: Any, *, file: str | None = None, images: str | os.PathLike[str] | None = None,
                      workers: int | None = None, progress: bool = False,
                      limits: Limits | None = None) -> Report:
    """Check a parsed COCO document (a dict as ``json.load`` gives it)."""
    images_dir = os.fspath(images) if images is not None else None
    findings, _ = check_document(document, file=file, images_dir=images_dir, workers=workers,
                                 progress=progress, limits=limits)
    return Report(file, findings, counts=_counts(document), images_checked=images_dir is not None)


def validate_file(
    annotation_file: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    fix: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
) -> Report:
    """Check a COCO file. ``images``: the folder of its images (their files are checked only when
    given). ``fix``: write a repaired copy there (never over the input) and list the changes in
    ``report.changes``; the findings are those of the input. ``limits``: the bounds of
    ``instkit.validate.rules.Limits`` (defaults documented in docs/validate.md)."""
    path = os.fspath(annotation_file)
    if fix is not None and same_file(fix, path):
        raise InstkitError("--fix must name a new file, not the input", Location(file=path))
    try:
        document = load_document(path)
    except JSONParseError as exc:
        if exc.message in ("file not found",) or exc.message.startswith("cannot read file"):
            raise
        code = exc.code or "json-parse"
        return Report(path, [Finding(code, RULES[code].severity, exc.message, Location(file=path))])
    with open(path, "rb") as handle:
        raw = handle.read()
    images_dir = os.fspath(images) if images is not None else None
    findings, _ = check_document(document, file=path, raw=raw, images_dir=images_dir,
                                 workers=workers, progress=progress, limits=limits)
    report = Report(path, findings, counts=_counts(document), images_checked=images_dir is not None)
    if fix is not None:
        fixed, changes = repair_document(document, file=path, images_dir=images_dir, workers=workers,
                                         limits=limits)
        with atomic_write(Path(fix)) as handle:
            json.dump(fixed, handle, allow_nan=False, separators=(",", ":"))
        report.changes = changes
        report.fixed_file = os.fspath(fix)
    return report


__all__ = ["CHECKS", "DEFAULT_LIMITS", "RULES", "Change", "Finding", "Limits", "Report", "Rule",
           "repair_document", "validate_document", "validate_file"]
