"""SA-1B per-image JSON (the segment-anything README's format), as a folder and as a tar shard
read in place; masks checked against pycocotools, written back and read again."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from instkit.errors import FormatError, RLEError
from instkit.io.sa1b import read_sa1b, write_sa1b
from instkit.sample import ImageTooLargeError

H, W = 12, 16


def _mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": rle["counts"].decode()}


def _document(image_id: int) -> dict[str, Any]:
    masks = [_mask(1, 5, 2, 9), _mask(6, 11, 10, 15)]
    return {
        "image": {"image_id": image_id, "width": W, "height": H, "file_name": f"sa_{image_id}.png"},
        "annotations": [
            {"id": 100 * image_id + k, "segmentation": _rle(m),
             "bbox": [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))],
             "area": int(m.sum()), "predicted_iou": 0.91 - k / 10, "stability_score": 0.97,
             "crop_box": [0, 0, W, H], "point_coords": [[4.5, 3.25]]}
            for k, m in enumerate(masks)],
    }


def _image_bytes(image_id: int) -> bytes:
    pixels = np.full((H, W, 3), image_id * 40, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(root: Path) -> Path:
    root.mkdir()
    for image_id in (1, 2):
        (root / f"sa_{image_id}.png").write_bytes(_image_bytes(image_id))
        (root / f"sa_{image_id}.json").write_text(json.dumps(_document(image_id)))
    return root


def _shard(path: Path, documents: dict[int, Any] | None = None) -> Path:
    with tarfile.open(path, "w") as archive:
        for image_id in (1, 2):
            for name, data in ((f"sa_{image_id}.png", _image_bytes(image_id)),
                               (f"sa_{image_id}.json", json.dumps(
                                   (documents or {}).get(image_id, _document(image_id))).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def _check(data: Any) -> None:
    assert len(data) == 2 and data.categories.names == ["object"]
    for image_id, sample in zip((1, 2), data):
        document = _document(image_id)
        inst = sample.instances
        assert sample.image_id == image_id and sample.image_size == (H, W)
        assert inst.ids.tolist() == [a["id"] for a in document["annotations"]]
        dense = inst.masks.to_dense()
        for k, ann in enumerate(document["annotations"]):
            np.testing.assert_array_equal(dense[k], mask_utils.decode(ann["segmentation"]) > 0)
            assert inst.extras["coco_fields"][k]["predicted_iou"] == ann["predicted_iou"]
            assert inst.extras["coco_fields"][k]["point_coords"] == [[4.5, 3.25]]
        np.testing.assert_array_equal(inst.extras["coco_bbox"][0], document["annotations"][0]["bbox"])
        assert int(sample.image[0, 0, 0]) == image_id * 40


def test_folder_of_json_files(tmp_path: Path) -> None:
    _check(read_sa1b(_folder(tmp_path / "sa")))


def test_tar_shard_is_read_in_place(tmp_path: Path) -> None:
    shard = _shard(tmp_path / "sa_000000.tar")
    data = read_sa1b(shard)
    _check(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sa_000000.tar"]  # nothing extracted
    assert data[1].meta.file_name == "sa_2.png"
    assert len(read_sa1b(tmp_path)) == 2  # a folder of shards


def test_round_trip_keeps_masks_ids_and_sam_fields(tmp_path: Path) -> None:
    data = read_sa1b(_shard(tmp_path / "sa_000000.tar"))
    counts = write_sa1b(data, tmp_path / "out")
    assert counts == {"images": 2, "objects": 4, "labels_dropped": 0, "crowd": 0,
                      "keypoints_dropped": 0, "empty_masks_dropped": 0}
    written = json.loads((tmp_path / "out" / "sa_1.json").read_text())
    assert written == _document(1)  # the same document, key for key
    assert (tmp_path / "out" / "sa_2.png").read_bytes() == _image_bytes(2)  # copied, not re-encoded
    _check(read_sa1b(tmp_path / "out"))


def test_through_coco_the_sam_fields_survive(tmp_path: Path) -> None:
    from instkit.io.coco import read_coco, write_coco

    data = read_sa1b(_folder(tmp_path / "sa"))
    write_coco(data, tmp_path / "coco" / "a.json", images_dir=tmp_path / "coco")
    coco = read_coco(tmp_path / "coco" / "a.json")
    assert json.loads((tmp_path / "coco" / "a.json").read_text())["annotations"][0][
        "stability_score"] == 0.97
    write_sa1b(coco, tmp_path / "back")
    assert json.loads((tmp_path / "back" / "sa_1.json").read_text()) == _document(1)


def test_classes_that_sa1b_cannot_hold_are_counted(tmp_path: Path) -> None:
    from instkit.categories import Categories

    data = read_sa1b(_folder(tmp_path / "sa"))
    two = Categories.from_names(["a", "b"])
    counts = write_sa1b(data, tmp_path / "out", two)
    assert counts["labels_dropped"] == 4


@pytest.mark.parametrize(("change", "error", "where"), [
    (lambda d: d["annotations"][1]["segmentation"].update(counts="0"), RLEError,
     "annotations[1].segmentation.counts, image_id=2, annotation id=201"),
    (lambda d: d["annotations"][0]["segmentation"].update(size=[H, W + 1]), RLEError,
     "annotations[0].segmentation.size"),
    (lambda d: d["image"].update(width="16"), FormatError, "image.width"),
    (lambda d: d["annotations"][1].update(id=None), FormatError, "annotations[1].id"),
    (lambda d: d["annotations"][1].update(id=2**70), FormatError, "annotations[1].id"),
    (lambda d: d["image"].update(width=10**6, height=10**6), ImageTooLargeError, "at image,"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, -1, 2]), FormatError,
     "annotations[0].bbox"),
])
def test_bad_documents_are_located(tmp_path: Path, change: Any, error: type, where: str) -> None:
    document = _document(2)
    change(document)
    data = read_sa1b(_shard(tmp_path / "sa_000000.tar", {2: document}))
    assert data[0].image_id == 1  # the other record reads: each is parsed when asked for
    with pytest.raises(error) as caught:
        data[1]
    assert where in str(caught.value) and "sa_000000.tar:sa_2.json" in str(caught.value)


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"gzip? no")
    with pytest.raises(FormatError, match="tar"):
        read_sa1b(tmp_path / "x.tar")


def test_samples_pickle_without_decoding_their_image(tmp_path: Path) -> None:
    import pickle

    data = read_sa1b(_shard(tmp_path / "sa_000000.tar"))
    sample = data[1]
    copy = pickle.loads(pickle.dumps(sample))  # as DataLoader workers receive it
    assert sample._slot._array is None and copy._slot._array is None  # still the tar member
    assert int(copy.image[0, 0, 0]) == 80 and copy._slot._array is not None
    assert len(pickle.loads(pickle.dumps(data))) == 2


def test_empty_masks_are_left_out_and_counted(tmp_path: Path) -> None:
    from instkit.masks import BitmapMask, Masks

    sample = read_sa1b(_folder(tmp_path / "sa"))[0]
    inst = sample.instances
    empty = BitmapMask(np.zeros((0, 0), bool), (0, 0))
    masks = Masks([inst.masks.items[0], empty], inst.image_size)
    counts = write_sa1b([sample.replace(instances=inst.replace(masks=masks))], tmp_path / "out")
    assert counts["empty_masks_dropped"] == 1 and counts["objects"] == 1
    assert len(read_sa1b(tmp_path / "out")[0].instances) == 1
