"""The long fuzz run (``make fuzz``): N hypothesis-mutated real documents through the worker.

    python -m tests.fuzz.run --documents 20000 [--seed 0] [--out fuzz-results.json]

Prints the counts the issue asks for (exceptions other than instkit's documented errors, native
crashes by signal, hangs, validate/read_coco disagreements, refused --fix and write_coco
outputs) and saves every failing document beside the JSON summary.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.harness import Fuzzer, dumps, failures, load_sources, mutated_documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per document")
    parser.add_argument("--out", default="fuzz-results/summary.json")
    args = parser.parse_args()
    sources = load_sources()
    if not sources:
        raise SystemExit("real data (../shared/data) not found")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fuzzer = Fuzzer(timeout=args.timeout)
    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    saved: list[str] = []
    start = time.time()

    @seed(args.seed)
    @settings(max_examples=args.documents, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: Any) -> None:
        text = dumps(data.draw(mutated_documents(sources)))
        outcome = fuzzer.run(text)
        counts["documents"] += 1
        kinds[outcome.kind] += 1
        result = outcome.result
        if outcome.kind == "ok":
            counts["validate clean"] += not result.get("validate", {}).get("errors", [1])
            counts["read_coco strict accepted"] += "accepted" in result.get("strict", {})
            counts["--fix output re-read"] += "reread" in result.get("fix", {})
        found = failures(outcome)
        for failure in found:
            counts[failure.split(" (")[0].split(":")[0]] += 1
        if found:
            path = out.parent / f"failure-{counts['documents']:06d}.json"
            path.write_text(text)
            saved.append(f"{path}: {found}")
        if counts["documents"] % 500 == 0:
            print(f"{counts['documents']} documents, {time.time() - start:.0f} s, "
                  f"{sum(1 for _ in saved)} failing", flush=True)

    try:
        one()
    finally:
        fuzzer.close()
    summary = {"documents": counts["documents"], "seconds": round(time.time() - start, 1),
               "seed": args.seed, "outcomes": dict(kinds), "counts": dict(counts),
               "failures": saved[:200], "cpu_count": os.cpu_count()}
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
