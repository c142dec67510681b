"""The user pipelines shown in docs/testing.md (torchvision.transforms.v2, raw albumentationsx) run
as printed and pass the alignment checker, photometric transforms included."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from instkit.io.coco import read_coco
from instkit.synthetic import make_samples
from instkit.testing import check_alignment

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def _section_code(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


@pytest.mark.parametrize(("title", "name"), [
    ("Your own torchvision.transforms.v2 pipeline", "torchvision_transform"),
    ("Your own raw albumentationsx pipeline", "albumentations_transform"),
])
def test_documented_user_pipeline_is_aligned_and_a_broken_copy_is_caught(title, name, tinycoco,
                                                                         request):
    if "torchvision" in title:
        pytest.importorskip("torchvision")
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the machine is shared; 2 threads are slower on small images
        request.addfinalizer(lambda: torch.set_num_threads(threads))
    namespace: dict = {}
    exec(compile(_section_code(title), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    transform = namespace[name]
    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    real = [coco[i] for i in range(2)] + make_samples(2, seed=4, image_size=(72, 96))
    report = check_alignment(transform, real, max_examples=6, max_side=64, num_keypoints=None)
    assert report.ok, report.to_text()

    def image_not_flipped_back(sample, *, seed=None):
        out = transform(sample, seed=seed)
        return out.replace(image=np.ascontiguousarray(out.image[:, ::-1]))

    caught = check_alignment(image_not_flipped_back, real[:2], generated=False)
    assert "probe_code" in caught.invariants(), caught.to_text()
