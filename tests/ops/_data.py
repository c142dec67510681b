"""Small hand-made COCO files for the dataset-operation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def square(x: float, y: float, size: float = 4.0) -> list[list[float]]:
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def annotation(ann_id: int, image_id: int, category_id: int, x: float = 2, y: float = 2,
               size: float = 4, **extra: Any) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "area": size * size, "bbox": [x, y, size, size], "segmentation": square(x, y, size),
            **extra}


def document(images: list[dict[str, Any]], annotations: list[dict[str, Any]],
             categories: list[dict[str, Any]]) -> dict[str, Any]:
    return {"info": {"description": "hand-made"}, "images": images, "annotations": annotations,
            "categories": categories}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path
