"""COCO -> YOLO-seg -> COCO: multi-part objects joined as Ultralytics joins them and split back,
splits and data.yaml as Ultralytics reads them, and each remaining loss counted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from instkit.errors import FormatError, InstkitError
from instkit.io.coco import read_coco
from instkit.io.yolo import join_parts, read_yolo, read_yolo_splits, split_outline, write_yolo
from instkit.masks import Masks
from tests.io._roundtrip import mask_iou


@pytest.fixture(scope="module")
def tiny(tinycoco: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    train = read_coco(tinycoco["train_json"], tinycoco["train_images"])
    val = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    out = tmp_path_factory.mktemp("yolo") / "splits"
    counts = write_yolo({"train": train, "val": val}, out)
    return {"train": train, "val": val, "out": out, "counts": counts}


def _holes(sample: Any, i: int) -> int:
    """Holes of mask ``i``, counted by scipy (8-connected, as the writer traces them)."""
    from scipy.ndimage import binary_fill_holes, label

    bitmap = sample.instances.masks[i].to_bitmaps().items[0].bitmap
    return int(label(binary_fill_holes(bitmap) & ~bitmap, np.ones((3, 3)))[1])


def test_round_trip_is_pixel_exact_but_for_counted_losses(tiny: dict[str, Any]) -> None:
    counts = tiny["counts"]
    samples = [*tiny["train"], *tiny["val"]]
    polygons = [item for s in samples for item, k in zip(s.instances.masks.items,
                                                           s.instances.masks.kinds, strict=True)
                if k == "polygon"]
    extra_parts = sum(len(item.parts) - 1 for item in polygons)
    traced = [(s, i) for s in samples for i, k in enumerate(s.instances.masks.kinds) if k != "polygon"]
    holes = sum(_holes(s, i) for s, i in traced)
    traced_parts = sum(len(s.instances.masks[i].to_polygons().items[0].parts) - 1  # type: ignore[union-attr]
                       for s, i in traced)
    # what tinycoco holds: before, all these extra parts were dropped
    assert (extra_parts, traced_parts, len(traced), holes) == (26, 33, 5, 8)
    assert counts["parts_joined"] == extra_parts + traced_parts and counts["parts_dropped"] == 0
    assert counts["rle_as_polygons"] == len(traced) and counts["holes_kept"] == holes
    assert counts["crowd"] == sum(int(s.instances.iscrowd.sum()) for s in samples)
    assert counts["objects"] == sum(len(s.instances) for s in samples)
    assert counts["overlapping_parts"] == 0 and counts["clipped_to_image"] == 0

    back = read_yolo_splits(tiny["out"])
    assert list(back) == ["train", "val"]
    ious: dict[str, list[float]] = {"polygon": [], "traced": []}
    for split in ("train", "val"):
        assert [s.image_id for s in back[split]] == sorted(s.image_id for s in tiny[split])
        by_id = {s.image_id: s for s in back[split]}
        for sample in tiny[split]:
            other = by_id[sample.image_id]
            assert other.meta.extra["split"] == split
            np.testing.assert_array_equal(other.instances.labels, sample.instances.labels)
            for i, item in enumerate(sample.instances.masks.items):
                iou = mask_iou(sample, i, other, i)
                if hasattr(item, "parts"):
                    # the joined outline comes back as the parts it was joined from
                    assert len(other.instances.masks.items[i].parts) == len(item.parts)
                    ious["polygon"].append(iou)
                else:
                    ious["traced"].append(iou)
    # every mask, multi-part polygons and crowd RLE with holes included: the same pixels
    assert min(ious["polygon"]) == 1.0 and len(ious["polygon"]) == 419
    assert min(ious["traced"]) == 1.0 and len(ious["traced"]) == 5


def test_traced_masks_with_holes_and_islands_come_back_pixel_exact(tmp_path: Path) -> None:
    import cv2

    from instkit.categories import Categories, Category
    from instkit.instances import Instances
    from instkit.sample import Sample, SampleMeta

    rng = np.random.default_rng(0)
    size = (48, 48)
    dense = []
    for k in range(24):  # noise: holes, islands in holes, diagonal contacts
        blob = rng.random((40, 40)) < rng.uniform(0.3, 0.8)
        if k % 2:
            blob = cv2.morphologyEx(blob.astype(np.uint8), cv2.MORPH_OPEN,
                                    np.ones((2, 2), np.uint8)).astype(bool)
        plane = np.zeros(size, bool)
        plane[4:44, 3:43] = blob
        dense.append(plane)
    masks = Masks.from_dense(np.stack(dense)).to_rle_masks()
    sample = Sample.from_array(
        np.zeros((*size, 3), np.uint8),
        Instances(image_size=size, masks=masks, labels=np.zeros(len(dense), np.int64)), 1,
        SampleMeta(file_name="1.png", categories=Categories([Category(id=1, name="a")])))
    counts = write_yolo([sample], tmp_path / "y")
    assert counts["rle_as_polygons"] == 24 and counts["holes_kept"] > 24
    back = read_yolo(tmp_path / "y")[0].instances.masks.to_bitmaps()
    for plane, item in zip(dense, back.items, strict=True):
        got = np.zeros(size, bool)
        (y0, x0), bitmap = item.offset, item.bitmap  # type: ignore[union-attr]
        got[y0 : y0 + bitmap.shape[0], x0 : x0 + bitmap.shape[1]] = bitmap
        np.testing.assert_array_equal(got, plane)
    # the check has teeth: outer contours only (holes filled) would not give these back
    filled = masks.to_polygons().area()
    assert (filled > masks.area()).sum() == 19


def test_keeping_only_the_largest_part_would_fail_the_bound(tiny: dict[str, Any]) -> None:
    # the bound above has teeth: the old writer (largest part only) and a join without the
    # there-and-back links both lose pixels on tinycoco's multi-part objects
    worst = {"largest": 1.0, "no_links": 1.0}
    for sample in tiny["train"]:
        masks = sample.instances.masks
        for item in masks.items:
            if not hasattr(item, "parts") or len(item.parts) < 2:
                continue
            largest = max(item.parts, key=len)
            concatenated = np.concatenate(item.parts)
            test = Masks.from_polygons([list(item.parts), [largest], [concatenated],
                                        [join_parts(item.parts)]], masks.image_size)
            rles = test.to_rle()
            import pycocotools.mask as mask_utils

            iou = np.asarray(mask_utils.iou(rles[1:], rles[:1], [0])).reshape(-1)
            worst["largest"] = min(worst["largest"], float(iou[0]))
            worst["no_links"] = min(worst["no_links"], float(iou[1]))
            assert iou[2] == 1.0  # the joined outline fills (even-odd) exactly as the parts
    assert worst["largest"] < 0.9 and worst["no_links"] < 0.99


def _square(x: float, y: float, side: float) -> np.ndarray:
    return np.asarray([x, y, x + side, y, x + side, y + side, x, y + side], dtype=np.float64)


def test_join_and_split_are_inverse() -> None:
    parts = [_square(2, 2, 6), _square(20, 3, 5), _square(10, 15, 4)]
    joined = join_parts(parts)
    ring = joined.reshape(-1, 2)
    # Ultralytics' walk: round the first part, out along each link and back along it
    # (each loop closed: one vertex more; each middle part visited twice: one more again)
    assert len(ring) == sum(len(p) // 2 for p in parts) + 2 * len(parts) - 2
    back = split_outline(joined)
    assert len(back) == 3
    for original, part in zip(parts, back, strict=True):
        a = {tuple(v) for v in original.reshape(-1, 2).tolist()}
        assert {tuple(v) for v in part.reshape(-1, 2).tolist()} == a
    # a broken split (the links not removed) would leave one outline
    assert len(split_outline(np.concatenate(parts))) == 1


def _write_lines(root: Path, lines: list[str], size: int = 40) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "images" / "1.png")
    (root / "data.yaml").write_text("names: {0: a}\n")
    (root / "labels" / "1.txt").write_text("".join(f"{line}\n" for line in lines))


def _line(outline: np.ndarray, size: int = 40) -> str:
    return "0 " + " ".join(f"{v / size:.6f}" for v in outline)


def test_a_joined_outline_reads_back_as_it_fills(tmp_path: Path) -> None:
    # A keyhole (outer square, link, inner square): even-odd fill leaves the inner square out.
    # Splitting it into two parts would fill the hole (the union), so it stays one outline.
    keyhole = join_parts([_square(4, 4, 30), _square(14, 14, 10)])
    apart = join_parts([_square(2, 2, 10), _square(25, 25, 10)])
    _write_lines(tmp_path, [_line(keyhole), _line(apart)])
    sample = read_yolo(tmp_path)[0]
    items = sample.instances.masks.items
    assert len(items[0].parts) == 1 and len(items[1].parts) == 2  # type: ignore[union-attr]
    dense = sample.instances.masks.to_bitmaps()
    area = sample.instances.masks.area()
    assert area[0] == 30 * 30 - 10 * 10 and area[1] == 2 * 10 * 10
    bitmap = dense.items[0].bitmap  # type: ignore[union-attr]
    assert not bitmap[15:20, 15:20].any() and bitmap[:5, :5].all()


def test_overlapping_parts_are_counted(tmp_path: Path) -> None:
    from instkit.categories import Categories, Category
    from instkit.instances import Instances
    from instkit.sample import Sample, SampleMeta

    size = (40, 40)
    masks = Masks.from_polygons([[_square(2, 2, 20), _square(12, 12, 20)], [_square(2, 30, 5)]],
                                size)
    sample = Sample.from_array(
        np.zeros((40, 40, 3), np.uint8),
        Instances(image_size=size, masks=masks, labels=np.zeros(2, np.int64)), 1,
        SampleMeta(file_name="1.png", categories=Categories([Category(id=1, name="a")])))
    counts = write_yolo([sample], tmp_path / "y")
    assert counts["overlapping_parts"] == 1 and counts["parts_joined"] == 1
    back = read_yolo(tmp_path / "y")[0].instances.masks
    # what Ultralytics' fillPoly shows too: the overlap left out
    assert back.area()[0] == 2 * 20 * 20 - 2 * 10 * 10


def test_one_folder_layout_and_data_yaml(tiny: dict[str, Any], tmp_path: Path) -> None:
    counts = write_yolo(tiny["val"], tmp_path / "flat")
    data = yaml.safe_load((tmp_path / "flat" / "data.yaml").read_text())
    assert data["train"] == data["val"] == "images" and "path" not in data
    assert data["names"][0] == "person" and list(data["names"]) == list(range(80))
    samples = read_yolo(tmp_path / "flat")  # listed by train and val: read once
    assert len(samples) == counts["images"] == 6
    assert [s.image_id for s in read_yolo(tmp_path / "flat" / "data.yaml", "val")] == \
        [s.image_id for s in samples]
    assert (tmp_path / "flat" / "labels" / samples[0].meta.file_name).with_suffix(".txt").is_file()
    data = yaml.safe_load((tiny["out"] / "data.yaml").read_text())
    assert {k: data[k] for k in ("train", "val")} == {"train": "images/train", "val": "images/val"}
    assert len(read_yolo(tiny["out"])) == 38 and len(read_yolo(tiny["out"], "val")) == 6
    with pytest.raises(FormatError, match="no split 'test'"):
        read_yolo(tiny["out"], "test")


def test_split_lists_and_path(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "data"
    for split, name in (("train", "a.png"), ("train", "b.png"), ("val", "c.png")):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(root / "images" / split / name)
        (root / "labels" / split / name).with_suffix(".txt").write_text(
            "1 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (root / "train.txt").write_text("./images/train/b.png\n./images/train/a.png\n")
    (tmp_path / "data.yaml").write_text(
        "path: data\ntrain: train.txt\nval: [images/val]\ntest:\nnames: [x, y]\n")
    splits = read_yolo_splits(tmp_path / "data.yaml")
    assert list(splits) == ["train", "val"]  # an empty test: is not a split
    assert [s.meta.file_name for s in splits["train"]] == ["b.png", "a.png"]
    assert [s.meta.file_name for s in splits["val"]] == ["c.png"]
    assert splits["val"][0].instances.masks.area()[0] > 0
    # moved: a path that is no longer there, the splits beside data.yaml
    (root / "data.yaml").write_text("path: /nowhere/data\ntrain: images/train\nval: images/val\n"
                                    "names: [x, y]\n")
    assert len(read_yolo(root)) == 3
    (tmp_path / "data.yaml").write_text("path: data\ntrain: images/train\nval: images/nope\n"
                                        "names: [x, y]\n")
    with pytest.raises(FormatError, match="'val': 'images/nope' is not a folder"):
        read_yolo(tmp_path)


def test_split_names_are_ultralytics_keys(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InstkitError, match="split names must be among train, val, test"):
        write_yolo({"training": tiny["val"]}, tmp_path / "y")
    assert not (tmp_path / "y").exists()


@pytest.fixture(scope="module")
def pose(pose_minicoco: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    train = read_coco(pose_minicoco["train_json"], pose_minicoco["train_images"])
    val = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    out = tmp_path_factory.mktemp("pose") / "pose"
    counts = write_yolo({"train": train, "val": val}, out, task="pose")
    return {"train": train, "val": val, "out": out, "counts": counts}


def test_pose_labels_keep_keypoints_and_boxes(pose: dict[str, Any]) -> None:
    counts = pose["counts"]
    samples = [*pose["train"], *pose["val"]]
    objects = sum(len(s.instances) for s in samples)
    bare = sum(int((~(s.instances.keypoints[:, :, 2] > 0).any(axis=1)).sum()) for s in samples)
    assert counts["objects"] == counts["masks_dropped"] == objects == 152
    assert counts["objects_without_keypoints"] == bare > 0 and counts["crowd"] == 1
    data = yaml.safe_load((pose["out"] / "data.yaml").read_text())
    assert data["kpt_shape"] == [17, 3] and data["kpt_names"][0][5] == "left_shoulder"
    back = read_yolo_splits(pose["out"])
    for split in ("train", "val"):
        by_id = {s.image_id: s for s in back[split]}
        for sample in pose[split]:
            other = by_id[sample.image_id]
            assert other.instances.masks is None
            kp, kq = sample.instances.keypoints, other.instances.keypoints
            np.testing.assert_array_equal(kq[..., 2], kp[..., 2])
            seen = kp[..., 2] > 0
            np.testing.assert_allclose(kq[seen][:, :2], kp[seen][:, :2], atol=1e-5)
            np.testing.assert_allclose(other.instances.boxes, sample.instances.boxes, atol=1e-3)
    table = back["train"][0].meta.categories
    assert table.flip_pairs() == pose["train"].categories.flip_pairs()
    assert table[0].skeleton == pose["train"].categories[0].skeleton


def test_ultralytics_pose_and_detection_files_read(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    # Ultralytics' own pose layout without kpt_names: names from flip_idx, so flips swap
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnames: {0: p}\n"
                                        "kpt_shape: [3, 2]\nflip_idx: [0, 2, 1]\n")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5 0.5 0.5 0.25 0.5 -1 -1\n")
    sample = read_yolo(tmp_path)[0]
    assert sample.meta.categories.flip_pairs() == [(1, 2)]
    np.testing.assert_allclose(sample.instances.keypoints[0],
                               [[20, 10, 2], [10, 10, 2], [0, 0, 0]])
    np.testing.assert_allclose(sample.instances.boxes[0], [10, 5, 30, 15])
    (tmp_path / "data.yaml").write_text("names: [p]\nkpt_shape: [3, 2]\nflip_idx: [1, 1, 2]\n")
    with pytest.raises(FormatError, match="'flip_idx' must swap pairs"):
        read_yolo(tmp_path)
    # YOLO detection: boxes only, no masks
    (tmp_path / "data.yaml").write_text("names: [p]\n")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    sample = read_yolo(tmp_path)[0]
    assert sample.instances.masks is None
    np.testing.assert_allclose(sample.instances.boxes, [[10, 5, 30, 15]])
    # a box line among polygons: a rectangle mask, noted
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n0 0.1 0.1 0.4 0.1 0.4 0.6\n")
    sample = read_yolo(tmp_path)[0]
    assert sample.instances.masks.area().tolist() == [200, 60]
    assert sample.meta.notes == ["yolo: 1 box line(s) read as rectangle masks"]
    with pytest.raises(FormatError, match=r"a pose line needs 4 \+ 3 x 2 numbers"):
        (tmp_path / "data.yaml").write_text("names: [p]\nkpt_shape: [3, 2]\n")
        read_yolo(tmp_path)


def test_pose_needs_keypoint_names(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InstkitError, match="task='pose' needs categories with keypoint names"):
        write_yolo(tiny["val"], tmp_path / "p", task="pose")


def test_bad_lines_name_the_file_and_line(tmp_path: Path) -> None:
    _write_lines(tmp_path, ["0 0.1 0.1 0.5 0.1 0.5 0.5", "3 0.1 0.1 0.5 0.1 0.5 0.5"], 20)
    with pytest.raises(FormatError, match=r"1.txt:2"):
        read_yolo(tmp_path)
    (tmp_path / "data.yaml").write_text("names: {1: a}\n")
    with pytest.raises(FormatError, match="'names' keys must be 0..0"):
        read_yolo(tmp_path)


_ULTRALYTICS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ultralytics.cfg import get_cfg
    from ultralytics.data import YOLODataset
    from ultralytics.data.converter import merge_multi_segment
    from ultralytics.data.utils import check_det_dataset, polygon2mask
    from instkit.io.coco import read_coco
    from instkit.io.yolo import join_parts
    from instkit.masks import Masks

    data = check_det_dataset(sys.argv[1], autodownload=False)
    out = {"nc": data["nc"], "names0": data["names"][0]}
    for split in ("train", "val"):
        ds = YOLODataset(img_path=data[split], imgsz=320, augment=False, hyp=get_cfg(),
                         task="segment", data=data)
        out[split] = [len(ds.labels), sum(len(lb["cls"]) for lb in ds.labels),
                      sum(len(lb["segments"]) for lb in ds.labels)]
        ds[0]  # an item builds (masks from the joined outlines)
    same = differ = 0
    holes = []
    for sample in read_coco(sys.argv[2], sys.argv[3]):
        masks = sample.instances.masks
        for i, item in enumerate(masks.items):
            if not hasattr(item, "parts"):  # a crowd RLE: how Ultralytics fills its holes
                h, w = sample.image_size
                label = f"{sys.argv[4]}/{sample.meta.file_name.rsplit('.', 1)[0]}.txt"
                line = open(label).read().splitlines()[i].split()
                xy = np.asarray(line[1:], float).reshape(-1, 2) * [w, h]
                theirs = polygon2mask((h, w), [xy.reshape(-1)], color=1, downsample_ratio=1) > 0
                bitmap = masks[i].to_bitmaps().items[0]
                (y0, x0), b = bitmap.offset, bitmap.bitmap
                ours = np.zeros((h, w), bool)
                ours[y0 : y0 + b.shape[0], x0 : x0 + b.shape[1]] = b
                filled = masks[i].to_polygons().to_bitmaps().items[0]
                (y1, x1), f = filled.offset, filled.bitmap
                hole = np.zeros((h, w), bool)
                hole[y1 : y1 + f.shape[0], x1 : x1 + f.shape[1]] = f
                hole &= ~ours
                if hole.sum() > 100:
                    holes.append(float((theirs & hole).sum() / hole.sum()))
                continue
            if len(item.parts) < 2:
                continue
            theirs = np.concatenate(merge_multi_segment([list(p) for p in item.parts]))
            pair = Masks.from_polygons([[theirs.reshape(-1)], [join_parts(item.parts)]],
                                       sample.image_size).rle_counts()
            same += pair[0] == pair[1]
            differ += pair[0] != pair[1]
    out["joins"] = [same, differ]
    out["holes_filled_by_ultralytics"] = holes
    pose = check_det_dataset(sys.argv[5], autodownload=False)
    ds = YOLODataset(img_path=pose["train"], imgsz=320, augment=False, hyp=get_cfg(),
                     task="pose", data=pose)
    out["pose"] = [len(ds.labels), sum(len(lb["cls"]) for lb in ds.labels),
                   list(ds[0]["keypoints"].shape[1:]), pose["flip_idx"]]
    print(json.dumps(out))
""")


def test_ultralytics_reads_what_instkit_writes(tiny: dict[str, Any], tinycoco: dict[str, Path],
                                               pose: dict[str, Any], tmp_path: Path) -> None:
    """Ultralytics' own dataset check and loader on the split folder (no network), and its
    ``merge_multi_segment`` filling the same pixels as ``join_parts``; in a child process, as
    importing Ultralytics changes OpenCV's thread count and writes a settings file."""
    # found, not imported: importing Ultralytics patches PIL.Image.open for the whole process
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("Ultralytics is a benchmark peer (bench extra)")
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "config"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                           os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-c", _ULTRALYTICS, str(tiny["out"] / "data.yaml"),
         str(tinycoco["train_json"]), str(tinycoco["train_images"]),
         str(tiny["out"] / "labels" / "train"), str(pose["out"] / "data.yaml")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["nc"] == 80 and result["names0"] == "person"
    objects = {k: sum(len(s.instances) for s in tiny[k]) for k in ("train", "val")}
    assert result["train"] == [32, objects["train"], objects["train"]]  # no image, no line lost
    assert result["val"] == [6, objects["val"], objects["val"]]
    assert result["joins"] == [17, 0]
    # the crowd mask with 4,268 hole pixels: Ultralytics' fillPoly leaves them out too (but
    # for its outline pixels, which fillPoly draws)
    assert len(result["holes_filled_by_ultralytics"]) == 1
    assert result["holes_filled_by_ultralytics"][0] < 0.2
    # pose labels: every person, 17 keypoints, COCO's flip_idx as in Ultralytics' coco-pose.yaml
    objects = sum(len(s.instances) for s in pose["train"])
    assert result["pose"] == [30, objects, [17, 3],
                              [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]
