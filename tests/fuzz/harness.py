"""Fuzz harness: hypothesis-driven mutations of real COCO documents, each run in a worker process.

``mutated_documents()`` draws a small piece of a real file (tinycoco, pose_minicoco: 1-3 images
with their annotations) and applies 1-4 mutations aimed at what breaks readers: junk values of any
JSON type, huge and beyond-int64 integers, NaN, strings and booleans for numbers, giant
coordinates and image sizes, duplicate ids, RLE counts strings and sizes, keypoint visibilities,
file names with NUL or lone surrogates, 256+ annotations in one image, JSON nested 100 to 1,200
deep. ``Fuzzer`` sends each document to ``tests/fuzz/worker.py`` (one process, restarted after a
crash) and classifies the outcome; a native crash is the worker's death by a signal, a hang its
timeout. ``failures(outcome)`` lists what the issue counts as a failure.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("INSTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
SOURCES = [
    SHARED_DATA / "tinycoco" / "annotations" / "instances_val2017.json",
    SHARED_DATA / "tinycoco" / "annotations" / "instances_train2017.json",
    SHARED_DATA / "pose_minicoco" / "annotations" / "person_keypoints_val2017.json",
    SHARED_DATA / "pose_minicoco" / "annotations" / "person_keypoints_train2017.json",
]
_DEEP = "__instkit_fuzz_deep_{}__"  # replaced by a nested list when the document is written


def load_sources() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in SOURCES if path.exists()]


# --- mutations -----------------------------------------------------------------------------------

_HUGE = st.sampled_from([2**31, 2**32, 2**40, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
                         10**30, 10**400, -(10**400)])
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([1e9, 1e12, -1e9, 1e300, 5e-324, 0.0, -0.0, 1e7, 2.0**24 + 1]))
_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["", "1", "x", "a\x00b", "\ud800", "../x",
                                                      "/etc/passwd", "é", "P?`<", "NaN"]))
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), _HUGE, _FLOATS, _TEXT)
_JUNK = st.recursive(_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=10)
_RLE_CHARS = st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), max_size=40)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    stack = [(node, path)]
    while stack:
        item, where = stack.pop()
        children = item.items() if isinstance(item, dict) else enumerate(item) \
            if isinstance(item, list) else ()
        for key, value in children:
            out.append((*where, key))
            if isinstance(value, (dict, list)):
                stack.append((value, (*where, key)))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _annotations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    anns = doc.get("annotations")
    return [a for a in anns if isinstance(a, dict)] if isinstance(anns, list) else []


def _images(doc: dict[str, Any]) -> list[dict[str, Any]]:
    images = doc.get("images")
    return [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []


@st.composite
def mutated_documents(draw: Any, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """A mutated piece of one of ``sources`` (real COCO documents)."""
    source = draw(st.sampled_from(sources))
    images = source["images"]
    picked = draw(st.lists(st.integers(0, len(images) - 1), min_size=1, max_size=3, unique=True))
    ids = {images[k]["id"] for k in picked}
    doc: dict[str, Any] = {
        "info": {"description": "fuzz"},
        "images": [json.loads(json.dumps(images[k])) for k in picked],
        "annotations": [json.loads(json.dumps(a)) for a in source["annotations"]
                        if a["image_id"] in ids],
        "categories": json.loads(json.dumps(source["categories"])),
    }
    for _ in range(draw(st.integers(1, 4))):
        mutation = draw(st.sampled_from(MUTATIONS))
        mutation(draw, doc)
    return doc


def m_junk(draw: Any, doc: dict[str, Any]) -> None:
    path = draw(st.sampled_from(_paths(doc)[1:] or [("info",)]))
    parent = _get(doc, path[:-1])
    if isinstance(parent, dict) and draw(st.integers(0, 3)) == 0:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = draw(_JUNK)


def m_number(draw: Any, doc: dict[str, Any]) -> None:
    """A number where a number goes, but a hostile one."""
    numbers = [p for p in _paths(doc)[1:] if isinstance(_get(doc, p), (int, float))]
    if numbers:
        path = draw(st.sampled_from(numbers))
        _get(doc, path[:-1])[path[-1]] = draw(st.one_of(_HUGE, _FLOATS, st.booleans(),
                                                        st.integers(-3, 3), _TEXT))


def m_scale_polygon(draw: Any, doc: dict[str, Any]) -> None:
    polygons = [a for a in _annotations(doc) if isinstance(a.get("segmentation"), list)]
    if polygons:
        ann = draw(st.sampled_from(polygons))
        factor = draw(st.sampled_from([1e3, 1e5, 1e7, 1e9, 1e12, -1e9, 0.0, 1e-9]))
        ann["segmentation"] = [[v * factor if isinstance(v, (int, float)) else v for v in part]
                               if isinstance(part, list) else part for part in ann["segmentation"]]


def m_image_size(draw: Any, doc: dict[str, Any]) -> None:
    images = _images(doc)
    if images:
        image = draw(st.sampled_from(images))
        key = draw(st.sampled_from(["width", "height", "both"]))
        value = draw(st.sampled_from([0, -1, 1, 2**16, 10**6, 2**31, 2**40, "640", 640.0, True,
                                      None, 46341]))
        for k in (["width", "height"] if key == "both" else [key]):
            image[k] = value


def m_duplicate_id(draw: Any, doc: dict[str, Any]) -> None:
    kind = draw(st.sampled_from(["images", "annotations", "categories"]))
    entries = doc.get(kind)
    if isinstance(entries, list) and len(entries) >= 2 and all(isinstance(e, dict) for e in entries):
        a, b = draw(st.lists(st.integers(0, len(entries) - 1), min_size=2, max_size=2, unique=True))
        entries[b]["id"] = entries[a].get("id")


def m_rle(draw: Any, doc: dict[str, Any]) -> None:
    anns = _annotations(doc)
    if not anns:
        return
    ann = draw(st.sampled_from(anns))
    images = {i.get("id"): i for i in _images(doc)}
    image = images.get(ann.get("image_id"), {})
    size: Any = [image.get("height", 20), image.get("width", 20)]
    choice = draw(st.integers(0, 4))
    if choice == 0:
        counts: Any = draw(_RLE_CHARS)
    elif choice == 1:
        counts = draw(st.lists(st.one_of(st.integers(-2, 2**33), _HUGE), max_size=6))
    elif choice == 2:
        counts = draw(st.sampled_from(["PPPPPPPPPPPPPPPPP?`<", "é", "\x00", "0" * 30, "o" * 20]))
        size = [20, 20]
    elif choice == 3:
        size = draw(st.one_of(_JUNK, st.lists(st.one_of(st.integers(-1, 2**40), _TEXT),
                                              max_size=3)))
        counts = [1]
    else:
        h, w = size if all(isinstance(v, int) and not isinstance(v, bool) for v in size) else (4, 4)
        counts = [0, h * w] if draw(st.booleans()) else [h * w]  # full / empty
    ann["segmentation"] = {"size": size, "counts": counts}


def m_crowded(draw: Any, doc: dict[str, Any]) -> None:
    """256+ annotations in one image (pycocotools' area fails from 256)."""
    anns = _annotations(doc)
    if anns:
        ann = draw(st.sampled_from(anns))
        copies = draw(st.sampled_from([255, 256, 300]))
        base = 10**9
        doc["annotations"] = doc["annotations"] + [dict(ann, id=base + k) for k in range(copies)]


def m_deep(draw: Any, doc: dict[str, Any]) -> None:
    depth = draw(st.sampled_from([50, 101, 150, 500, 990, 1200]))
    where = draw(st.sampled_from(["top", "annotation", "image", "category", "info"]))
    token = _DEEP.format(depth)
    if where == "top":
        doc["scene_annotations"] = token
    elif where == "info" and isinstance(doc.get("info"), dict):
        doc["info"]["deep"] = token
    else:
        entries = {"annotation": _annotations, "image": _images}.get(where, lambda d: [
            c for c in d.get("categories") or [] if isinstance(c, dict)])(doc)
        if entries:
            draw(st.sampled_from(entries))["attributes"] = token


def m_keypoints(draw: Any, doc: dict[str, Any]) -> None:
    anns = _annotations(doc)
    if anns:
        ann = draw(st.sampled_from(anns))
        kp = ann.get("keypoints")
        if isinstance(kp, list) and kp and draw(st.booleans()):
            k = draw(st.integers(0, len(kp) - 1))
            kp[k] = draw(st.one_of(st.integers(-1, 4), _HUGE, _FLOATS, st.booleans()))
        else:
            ann["keypoints"] = draw(st.lists(st.one_of(st.integers(0, 3), _FLOATS), max_size=12))


def m_file_name(draw: Any, doc: dict[str, Any]) -> None:
    images = _images(doc)
    if images:
        image = draw(st.sampled_from(images))
        image["file_name"] = draw(st.sampled_from(["a\x00.jpg", "a\ud800.jpg", "../../x.jpg",
                                                   "/abs.jpg", "", "x/../../y.jpg", ".", "..",
                                                   "dir/ok.jpg", "C:\\x.jpg"]))


def m_bbox(draw: Any, doc: dict[str, Any]) -> None:
    anns = _annotations(doc)
    if anns:
        ann = draw(st.sampled_from(anns))
        ann["bbox"] = draw(st.one_of(
            st.lists(st.one_of(st.integers(-2, 10), _FLOATS, _HUGE, st.booleans()), max_size=5),
            st.sampled_from([[0, 0, 0, 0], [1, 1, 0, 5], [1, 1, -3, 5], None])))


def m_small_polygon(draw: Any, doc: dict[str, Any]) -> None:
    anns = _annotations(doc)
    if anns:
        ann = draw(st.sampled_from(anns))
        ann["segmentation"] = draw(st.sampled_from([
            [], [[]], [[1, 1, 2, 2]], [[5.2, 5.2, 5.3, 5.2, 5.25, 5.3]], [[0, 0, 1, 0, 1]],
            [[10, 10, 60, 60, 60, 10, 10, 60]],  # bowtie
            [[0, 0, 100, 0, 100, 100, 0, 100, 0, 0, 30, 30, 30, 70, 70, 70, 70, 30, 30, 30]],  # keyhole
        ]))


MUTATIONS = [m_junk, m_junk, m_number, m_number, m_scale_polygon, m_image_size, m_duplicate_id,
             m_rle, m_rle, m_crowded, m_deep, m_keypoints, m_file_name, m_bbox, m_small_polygon]


def dumps(doc: Any) -> str:
    """JSON text of a mutated document (NaN written as the token; deep placeholders expanded)."""
    text = json.dumps(doc)
    while True:
        start = text.find('"__instkit_fuzz_deep_')
        if start < 0:
            return text
        stop = text.index('__"', start) + 3
        depth = int(text[start + len('"__instkit_fuzz_deep_'):stop - 3])
        text = text[:start] + "[" * depth + "]" * depth + text[stop:]


# --- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one document."""

    kind: str  # "ok" | "crash" | "hang" | "worker-error"
    result: dict[str, Any] = field(default_factory=dict)
    signal: str | None = None
    seconds: float = 0.0


class Fuzzer:
    """One worker process at a time (restarted after a crash or a hang)."""

    def __init__(self, timeout: float = 30.0, workdir: str | None = None) -> None:
        self.timeout = timeout
        self.workdir = workdir or tempfile.mkdtemp(prefix="instkit-fuzz-")
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONFAULTHANDLER="")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker"], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdout is not None
        ready = self._readline(process, 120.0)
        if ready is None or "ready" not in ready:
            process.kill()
            raise RuntimeError("the fuzz worker did not start")
        return process

    @staticmethod
    def _readline(process: subprocess.Popen[str], timeout: float) -> str | None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        return process.stdout.readline()

    def run(self, document_text: str, plant: str | None = None) -> Outcome:
        path = os.path.join(self.workdir, "input.json")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(document_text)
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        process = self.process
        assert process.stdin is not None
        start = time.perf_counter()
        try:
            process.stdin.write(json.dumps({"path": path, "plant": plant}) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._readline(process, self.timeout)
        seconds = time.perf_counter() - start
        if line:
            return Outcome("ok", json.loads(line), seconds=seconds)
        if line is None:  # nothing within the timeout: a hang
            process.kill()
            process.wait()
            self.process = None
            return Outcome("hang", seconds=seconds)
        code = process.wait()
        self.process = None
        if code < 0:
            return Outcome("crash", signal=signal.Signals(-code).name, seconds=seconds)
        return Outcome("worker-error", signal=f"exit {code}", seconds=seconds)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def failures(outcome: Outcome) -> list[str]:
    """What the issue counts as failures: native crashes, hangs, exceptions that are not
    instkit's documented errors, validate and strict read_coco disagreeing, and outputs of
    ``--fix`` or ``write_coco`` that read_coco refuses."""
    if outcome.kind != "ok":
        return [f"{outcome.kind}{f' ({outcome.signal})' if outcome.signal else ''}"]
    out: list[str] = []
    result = outcome.result
    for op in ("validate", "strict", "lenient", "write", "fix"):
        if "exception" in result.get(op, {}):
            out.append(f"exception in {op}: {result[op]['exception']['type']}")
    validate, strict = result.get("validate", {}), result.get("strict", {})
    if "errors" in validate and ("accepted" in strict or "refused" in strict):
        clean = not validate["errors"]
        if clean and "refused" in strict:
            out.append(f"validate clean but read_coco refuses ({strict.get('code')})")
        if not clean and "accepted" in strict:
            out.append(f"validate errors {validate['errors']} but read_coco accepts")
    if "refused" in validate and "accepted" in strict:
        out.append("validate refuses but read_coco accepts")
    if "refused_after_fix" in result.get("fix", {}):
        out.append(f"read_coco refuses the --fix output ({result['fix']['code']})")
    if "refused" in result.get("write", {}):
        out.append(f"write_coco output refused ({result['write']['code']})")
    return out
