"""DDP on the CPU: two gloo processes train one tiny RF-DETR-Seg together and evaluate it."""

from __future__ import annotations

import json
import os
import socket

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, ann: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from instkit.engine import TrainConfig, train
    from instkit.engine.distributed import cleanup
    from instkit.io.coco import read_coco
    from instkit.models import build_model

    data = read_coco(ann)
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    adapter = build_model("rfdetr", data.categories, tiny=True)
    result = train(adapter, data, data, out, TrainConfig(epochs=1, batch_size=1, lr=1e-3,
                                                         progress=False, device="cpu"))
    digest = float(sum(p.detach().double().sum() for p in adapter.model.parameters()))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump({"digest": digest, "steps": result.steps,
                   "map50": result.last_eval.mask_map50,
                   "images": result.last_eval.num_images}, handle)
    cleanup()


def test_two_gloo_processes_train_and_evaluate_together(tmp_path):
    import torch.multiprocessing as mp

    from instkit.engine.logging import read_metrics
    from instkit.synthetic import write_dataset

    ann = write_dataset(tmp_path / "ds", num_images=4, seed=2, image_size=(64, 64),
                        max_instances=3)
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(ann), str(out)), nprocs=2, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    # 4 images, 2 ranks, batch 1: two steps each, identical weights after every step
    assert [r["steps"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == pytest.approx(ranks[1]["digest"], rel=1e-9)
    # evaluation gathered every image from both ranks, and both ranks got the same figures
    assert ranks[0]["images"] == ranks[1]["images"] == 4
    assert ranks[0]["map50"] == ranks[1]["map50"]
    records = read_metrics(out / "metrics.jsonl")
    assert records[0]["world_size"] == 2
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2]  # rank 0 only
    assert (out / "best" / "model.safetensors").is_file()
