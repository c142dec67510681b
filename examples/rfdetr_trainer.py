"""The Transformers RF-DETR-Seg fine-tuning guide, with instkit's data path.

What changes from the guide: the rows of the Hugging Face dataset become instkit ``Sample``s in
``with_transform`` (``instkit.data.hf_transform``, with an instkit augmentation preset), the
``data_collator`` is ``instkit.data.Collator("rfdetr")`` (the guide's processor call and list
collate in one), and ``compute_metrics`` reports the guide's union mean IoU together with COCO
mask mAP (``instkit.evaluation.evaluate``), with predictions mapped back to each image's own size.
Everything else is the guide's ``Trainer`` setup.

    python examples/rfdetr_trainer.py --tiny                 # a tiny model on synthetic shapes
    python examples/rfdetr_trainer.py --data HF_DIR --val-data HF_DIR --weights RFDETR_DIR

``--data`` is a folder written by ``datasets``' ``save_to_disk`` in the guide's layout (for example
by ``instkit convert --to hf``). Nothing is downloaded: ``--weights`` is a local folder (or a hub
id already in the Hugging Face cache); without it the model starts from random initialisation.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthetic_hf(folder: Path, num_images: int, seed: int, size: int) -> Path:
    """A synthetic shapes dataset saved in the guide's layout."""
    from instkit.io.hf import write_hf
    from instkit.synthetic import categories, make_samples

    if not folder.exists():
        samples = make_samples(num_images, seed=seed, image_size=(size, size), max_instances=4,
                               crowd_probability=0.0)
        write_hf(samples, folder, categories())
    return folder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="training data (save_to_disk folder)")
    parser.add_argument("--val-data", type=Path, help="validation data (save_to_disk folder)")
    parser.add_argument("--weights", help="local RF-DETR-Seg folder or cached hub id")
    parser.add_argument("--out", type=Path, default=Path("rf-detr-seg-instkit"))
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny model, 12 small synthetic images, one epoch (a CPU smoke run)")
    args = parser.parse_args(argv)

    import torch
    from datasets import load_from_disk
    from transformers import Trainer, TrainingArguments

    from instkit.data import Collator
    from instkit.evaluation import evaluate
    from instkit.io.hf import hf_row_to_sample, read_hf
    from instkit.models import build_model
    from instkit.transforms.presets import train_default

    args.out.mkdir(parents=True, exist_ok=True)
    train_dir = args.data or synthetic_hf(args.out / "data-train", 12 if args.tiny else 200, 0, 96)
    val_dir = args.val_data or (args.data if args.data else
                                synthetic_hf(args.out / "data-val", 4 if args.tiny else 40, 1, 96))
    train_set, val_set = read_hf(train_dir), read_hf(val_dir)
    categories = train_set.categories

    # the model, with id2label / label2id from the dataset (random init when offline)
    adapter = build_model("rfdetr", categories, weights=args.weights, tiny=args.tiny)
    size = tuple(adapter.config["image_size"])
    model = adapter.model

    # rows -> Samples lazily (augmented for training); the collator builds the model's batch
    augment = train_default(size=size)

    def to_samples(batch: dict[str, list[Any]], *, train: bool) -> dict[str, list[Any]]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(),
                                                                         strict=True)]
        samples = [hf_row_to_sample(row, categories, category_ids=train_set.category_ids)
                   for row in rows]
        return {"sample": [augment(s) if train else s for s in samples]}

    train_ds = load_from_disk(str(train_dir)).shuffle(seed=42).with_transform(
        partial(to_samples, train=True))
    valid_ds = load_from_disk(str(val_dir)).with_transform(partial(to_samples, train=False))
    collator = Collator("rfdetr", size=size)

    ground_truth = {s.image_id: s for s in val_set}

    @torch.no_grad()
    def compute_metrics(evaluation_results: Any) -> dict[str, float]:
        """The guide's union mean IoU plus COCO mask mAP, on each image's own pixels."""
        from instkit.sample import Sample

        predictions = []
        for outputs, labels in zip(evaluation_results.predictions, evaluation_results.label_ids,
                                   strict=True):
            logits, pred_boxes, pred_masks = outputs[1], outputs[2], outputs[3]
            ids = [int(lab["image_id"].reshape(-1)[0]) for lab in labels]
            sizes = [ground_truth[i].image_size for i in ids]
            # the collator resizes to a fixed size: no padding to cut off
            for image_id, inst in zip(ids, adapter.postprocess(logits, pred_boxes, pred_masks,
                                                               sizes), strict=True):
                predictions.append(Sample(inst, image_id))
        result = evaluate(list(ground_truth.values()), predictions, categories, progress=False)
        return {"mean_iou": result.mean_iou, "mask_map50": result.mask_map50,
                "mask_map": result.mask_map, "box_map50": result.box_map50}

    on_gpu = torch.cuda.is_available()
    training_args = TrainingArguments(
        output_dir=str(args.out / "trainer"),
        num_train_epochs=args.epochs or (1 if args.tiny else 10),
        per_device_train_batch_size=args.batch_size or (4 if args.tiny else 16),
        per_device_eval_batch_size=args.batch_size or (4 if args.tiny else 16),
        learning_rate=1e-3 if args.tiny else 1e-4,
        weight_decay=1e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # a float below 1: a ratio of all steps (the guide's warmup_ratio)
        fp16=on_gpu,
        use_cpu=not on_gpu,
        dataloader_num_workers=0 if args.tiny else 4,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        # the guide reloads the best checkpoint at the end; with transformers 5.x the Trainer's
        # reload of an RF-DETR checkpoint does not map its keys back (every weight is reported
        # missing), so the best checkpoint is only tracked here (trainer.state.best_model_checkpoint)
        load_best_model_at_end=False,
        metric_for_best_model="eval_mask_map50",
        greater_is_better=True,
        remove_unused_columns=False,
        eval_do_concat_batches=False,
        report_to="none",
        logging_steps=1,
        push_to_hub=False,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds,
                      eval_dataset=valid_ds, data_collator=collator,
                      compute_metrics=compute_metrics)
    trainer.train()
    metrics = trainer.evaluate()
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
