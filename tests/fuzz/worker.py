"""Fuzz worker: runs every operation on one COCO file per request, in its own process.

Protocol: one request per line on stdin, ``{"path": ..., "plant": null | "segv" | "fpe" |
"abort" | "hang" | "exception" | "disagree"}``; one JSON line back on stdout with the outcome of
each operation. A native crash kills this process (the parent sees the signal), a hang is the
parent's timeout. Memory is capped (``INSTKIT_FUZZ_MEMORY_MB``, default 3072) so that a runaway
allocation is a MemoryError here, not a swapping machine.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any


def _limit_memory() -> None:
    megabytes = int(os.environ.get("INSTKIT_FUZZ_MEMORY_MB", "3072"))
    limit = megabytes << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _exception(exc: BaseException) -> dict[str, Any]:
    return {"type": f"{type(exc).__module__}.{type(exc).__name__}",
            "message": str(exc)[:300], "traceback": traceback.format_exc()[-2000:]}


def _touch(dataset: Any) -> int:
    """Use every sample the way a training loop would: masks, boxes, areas, RLE."""
    count = 0
    for sample in dataset:
        inst = sample.instances
        if inst.masks is not None:
            inst.masks.area()
            inst.masks.boxes()
            inst.masks.rle_counts()
        count += len(inst)
    return count


def run_one(path: str, plant: str | None, workdir: str) -> dict[str, Any]:
    import instkit
    from instkit.errors import InstkitError
    from instkit.validate import validate_file

    out: dict[str, Any] = {}
    if plant == "segv":
        import ctypes

        ctypes.string_at(0)
    if plant == "fpe":
        os.kill(os.getpid(), signal.SIGFPE)
    if plant == "abort":
        os.abort()
    if plant == "hang":
        while True:
            pass
    if plant == "exception":
        out["validate"] = {"exception": _exception(ValueError("planted"))}
        return out
    # validate, writing the --fix output at once (its findings are those of the input)
    fixed = os.path.join(workdir, "fixed.json")
    if os.path.exists(fixed):
        os.unlink(fixed)
    fixed_file = None
    try:
        report = validate_file(path, progress=False, fix=fixed)
        out["validate"] = {"errors": sorted({f.code for f in report.errors})}
        fixed_file = report.fixed_file
        if fixed_file is None:
            out["fix"] = {"skipped": sorted(report.codes())}
    except InstkitError as exc:
        out["validate"] = {"refused": type(exc).__name__, "code": getattr(exc, "code", None)}
        out["fix"] = {"refused": type(exc).__name__, "code": getattr(exc, "code", None)}
    except BaseException as exc:  # noqa: BLE001 - what the fuzzer is looking for
        out["validate"] = {"exception": _exception(exc)}
        out["fix"] = {"exception": _exception(exc)}
    # read_coco, strict
    try:
        dataset = instkit.read_coco(path)
        out["strict"] = {"accepted": _touch(dataset)}
        if plant == "disagree":
            out["strict"] = {"refused": "Planted", "code": "planted"}
    except InstkitError as exc:
        out["strict"] = {"refused": type(exc).__name__, "code": getattr(exc, "code", None)}
    except BaseException as exc:  # noqa: BLE001
        out["strict"] = {"exception": _exception(exc)}
    # read_coco, lenient, then write_coco and read the result back strictly
    try:
        lenient = instkit.read_coco(path, strict=False)
        out["lenient"] = {"accepted": _touch(lenient), "problems": len(lenient.problems)}
        target = os.path.join(workdir, "written.json")
        try:
            instkit.write_coco(lenient, target)
            out["write"] = {"reread": _touch(instkit.read_coco(target))}
        except InstkitError as exc:
            out["write"] = {"refused": type(exc).__name__, "code": getattr(exc, "code", None),
                            "message": str(exc)[:300]}
        except BaseException as exc:  # noqa: BLE001
            out["write"] = {"exception": _exception(exc)}
    except InstkitError as exc:
        out["lenient"] = {"refused": type(exc).__name__, "code": getattr(exc, "code", None)}
    except BaseException as exc:  # noqa: BLE001
        out["lenient"] = {"exception": _exception(exc)}
    # --fix output, read back strictly
    if fixed_file is not None:
        try:
            out["fix"] = {"reread": _touch(instkit.read_coco(fixed_file))}
        except InstkitError as exc:
            out["fix"] = {"refused_after_fix": type(exc).__name__,
                          "code": getattr(exc, "code", None), "message": str(exc)[:300]}
        except BaseException as exc:  # noqa: BLE001
            out["fix"] = {"exception": _exception(exc)}
    return out


def main() -> None:
    _limit_memory()
    sys.setrecursionlimit(1000)
    import instkit  # noqa: F401 - imported once, before the first request is timed
    import instkit.validate  # noqa: F401

    workdir = tempfile.mkdtemp(prefix="instkit-fuzz-worker-")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        result = run_one(request["path"], request.get("plant"), workdir)
        print(json.dumps(result, default=str), flush=True)
    for name in os.listdir(workdir):
        Path(workdir, name).unlink()
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
