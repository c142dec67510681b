"""No false alarms: every preset passes the alignment checker (row and probe invariants) on every
image of tinycoco and pose_minicoco (../shared/data)."""

from __future__ import annotations

import pytest

from instkit.io.coco import read_coco
from instkit.testing import check_alignment
from instkit.transforms.presets import evaluation, train_default, yolo_seg

SIZE = (256, 256)

def _preset(name: str, pool):
    if name == "train":
        return train_default(SIZE, seed=0)
    if name == "eval":
        return evaluation(SIZE)
    return yolo_seg(pool=pool, size=SIZE, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "train"])
@pytest.mark.parametrize("name", ["train", "eval", "yolo-seg"])
def test_every_preset_passes_on_every_tinycoco_image(tinycoco, name, split):
    data = read_coco(tinycoco[f"{split}_json"], tinycoco[f"{split}_images"])
    report = check_alignment(_preset(name, data), [data[i] for i in range(len(data))],
                             generated=False)
    assert report.ok, report.to_text()
    assert report.samples_checked == len(data)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "train"])
@pytest.mark.parametrize("name", ["train", "eval", "yolo-seg"])
def test_every_preset_passes_on_every_pose_minicoco_image(pose_minicoco, name, split):
    data = read_coco(pose_minicoco[f"{split}_json"], pose_minicoco[f"{split}_images"])
    report = check_alignment(_preset(name, data), [data[i] for i in range(len(data))],
                             generated=False)
    assert report.ok, report.to_text()
    assert report.samples_checked == len(data)
