"""``find_duplicates`` / ``instkit dedup``: exact copies by bytes, near copies by perceptual hash
(a resized, re-encoded copy of a real photo found; different photos not), removal only when
asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from instkit.cli import cli
from instkit.io.coco import read_coco
from instkit.ops import dedup as dedup_module
from instkit.ops import find_duplicates, remove_duplicates
from instkit.ops.dedup import hamming, near_pairs

from ._data import annotation, document, write


def _photos(tinycoco, count: int = 6) -> list[Path]:
    return sorted(Path(tinycoco["train_images"]).glob("*.jpg"))[:count]


def _with_copies(tmp_path: Path, tinycoco) -> Path:
    """Six real photos, plus: ``exact.jpg`` (the bytes of photo 0) and ``small.jpg`` (photo 1
    at half size, re-encoded at JPEG quality 60). One annotation per image."""
    folder = tmp_path / "images"
    folder.mkdir()
    photos = _photos(tinycoco)
    names = []
    for photo in photos:
        shutil.copyfile(photo, folder / photo.name)
        names.append(photo.name)
    shutil.copyfile(photos[0], folder / "exact.jpg")
    with Image.open(photos[1]) as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR) \
            .save(folder / "small.jpg", quality=60)
    names += ["exact.jpg", "small.jpg"]
    images = []
    for image_id, name in enumerate(names, start=1):
        with Image.open(folder / name) as im:
            images.append({"id": image_id, "file_name": name, "width": im.width,
                           "height": im.height})
    anns = [annotation(i, i, 1) for i in range(1, len(names) + 1)]
    return write(folder / "data.json", document(images, anns, [{"id": 1, "name": "thing"}]))


def _pairs(result) -> set[tuple[str, str, str]]:
    return {(p["kind"], p["a"]["file_name"], p["b"]["file_name"]) for p in result.pairs}


def assert_found_exactly(result, photos: list[Path]) -> None:
    """The exact copy and the resized copy paired with their originals, and nothing else."""
    expected = {("exact", photos[0].name, "exact.jpg"), ("near", photos[1].name, "small.jpg")}
    if _pairs(result) != expected:
        raise AssertionError(f"pairs {sorted(_pairs(result))}, expected {sorted(expected)}")


@pytest.mark.parametrize("kind", ["phash", "dhash"])
def test_exact_and_near_copies_found_and_nothing_else(tmp_path: Path, tinycoco, kind: str) -> None:
    dataset = read_coco(_with_copies(tmp_path, tinycoco))
    result = find_duplicates([dataset], hash=kind)
    assert_found_exactly(result, _photos(tinycoco))
    near = result.near_pairs[0]
    assert near["distance"] <= result.threshold
    assert len(result.groups) == 2


def test_the_check_fails_with_a_broken_hash(tmp_path: Path, tinycoco, monkeypatch) -> None:
    dataset = read_coco(_with_copies(tmp_path, tinycoco))
    monkeypatch.setattr(dedup_module, "phash", lambda path: 0)  # every image looks the same
    with pytest.raises(AssertionError, match="pairs"):
        assert_found_exactly(find_duplicates([dataset]), _photos(tinycoco))
    # A "perceptual" hash that is a hash of the bytes misses the resized copy.
    monkeypatch.setattr(dedup_module, "phash",
                        lambda path: int(dedup_module.file_sha256(path)[:15], 16))
    with pytest.raises(AssertionError, match="pairs"):
        assert_found_exactly(find_duplicates([dataset]), _photos(tinycoco))


def test_different_real_photos_are_far_apart(tinycoco, pose_minicoco) -> None:
    photos = sorted(Path(tinycoco["train_images"]).glob("*.jpg")) + \
        sorted(Path(pose_minicoco["val_images"]).glob("*.jpg"))
    hashes = [dedup_module.phash(p) for p in photos]
    assert not near_pairs(hashes, dedup_module.DEFAULT_THRESHOLD["phash"])
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 12


def test_near_pairs_agree_with_a_plain_loop() -> None:
    import numpy as np

    values = np.random.default_rng(0).integers(0, 2**63, 300, dtype=np.uint64)
    values[5] = values[7] ^ np.uint64(0b1011)  # 3 bits apart
    fast = near_pairs(values, 20, block=64)
    slow = [(i, j, hamming(int(values[i]), int(values[j]))) for i in range(300)
            for j in range(i + 1, 300) if hamming(int(values[i]), int(values[j])) <= 20]
    assert fast == sorted(slow) and (5, 7, 3) in fast


def test_across_files_and_removal(tmp_path: Path, tinycoco) -> None:
    path = _with_copies(tmp_path, tinycoco)
    dataset = read_coco(path)
    result = find_duplicates([dataset], keep="first")
    assert not result.drops.images  # finding removes nothing
    kept = remove_duplicates(dataset, result, remove="exact")
    assert [s.meta.file_name for s in kept if s.meta.file_name in ("exact.jpg", "small.jpg")] == \
        ["small.jpg"]
    assert result.drops.images == {"exact-duplicate": [7]}
    assert result.drops.annotations == {"in-dropped-image (exact-duplicate)": [7]}
    result = find_duplicates([dataset])
    kept = remove_duplicates(dataset, result, remove="near")
    assert len(kept) == 6 and result.drops.images == {"exact-duplicate": [7], "near-duplicate": [8]}
    largest = find_duplicates([dataset], keep="largest")
    group = next(g for g in largest.groups if "small.jpg" in
                 {largest.images[i].file_name for i in g})
    assert largest.images[group[0]].file_name != "small.jpg"  # the full-size original is kept
    # Across files: the train file against a file holding a copy of one of its photos.
    other = read_coco(tinycoco["train_json"], tinycoco["train_images"])
    cross = find_duplicates([other, dataset])
    assert {(p["a"]["input"], p["b"]["input"]) for p in cross.pairs} >= {(0, 1)}
    with pytest.raises(Exception, match="say which one"):
        remove_duplicates(dataset, cross)
    # Cleaning the second file against the first: every image goes, its six photos (which
    # the first file holds) included, though within its own file each would be kept.
    cleaned = remove_duplicates(dataset, cross, remove="near", input=1)
    assert cleaned == []
    assert cross.drops.images == {"exact-duplicate": [1, 2, 3, 4, 5, 6, 7], "near-duplicate": [8]}
    # Cleaning against the first only for exact copies keeps the resized one.
    exact_only = find_duplicates([other, dataset])
    assert [s.meta.file_name for s in remove_duplicates(dataset, exact_only, remove="exact",
                                                        input=1)] == ["small.jpg"]


def test_exact_removal_inside_a_near_group(tmp_path: Path, tinycoco) -> None:
    # small.jpg is near photo 1; a byte copy of small.jpg joins the group through it. Exact
    # removal drops the byte copy (same bytes as small.jpg, not as the group's first image).
    path = _with_copies(tmp_path, tinycoco)
    shutil.copyfile(path.parent / "small.jpg", path.parent / "small2.jpg")
    doc = json.loads(path.read_text())
    entry = dict(next(im for im in doc["images"] if im["file_name"] == "small.jpg"))
    entry.update(id=99, file_name="small2.jpg")
    doc["images"].append(entry)
    write(path, doc)
    dataset = read_coco(path)
    result = find_duplicates([dataset])
    kept = remove_duplicates(dataset, result, remove="exact")
    names = [s.meta.file_name for s in kept]
    assert "small2.jpg" not in names and "small.jpg" in names and "exact.jpg" not in names
    assert result.drops.images == {"exact-duplicate": [7, 99]}


def test_unreadable_images_are_listed(tmp_path: Path, tinycoco) -> None:
    path = _with_copies(tmp_path, tinycoco)
    (path.parent / "small.jpg").write_bytes(b"not an image")
    result = find_duplicates([read_coco(path)])
    assert [u["file_name"] for u in result.unreadable] == ["small.jpg"]
    removed = CliRunner().invoke(cli, ["dedup", str(path), "--remove", "exact", "-o",
                                       str(tmp_path / "out.json")])
    assert removed.exit_code == 1 and "unreadable, not compared: small.jpg" in removed.output
    assert _pairs(result) == {("exact", _photos(tinycoco)[0].name, "exact.jpg")}


def test_cli_dedup(tmp_path: Path, tinycoco) -> None:
    path = _with_copies(tmp_path, tinycoco)
    runner = CliRunner()
    report = runner.invoke(cli, ["dedup", str(path), "--format", "json"])
    assert report.exit_code == 1, report.output  # duplicates found, nothing removed
    data = json.loads(report.output)
    assert data["exact_pairs"] == 1 and data["near_pairs"] == 1 and data["removed"] is None
    assert len(data["pairs"]) == 2
    text = runner.invoke(cli, ["dedup", str(path)])
    assert text.exit_code == 1 and "nothing removed" in text.output and "small.jpg" in text.output
    pooled = runner.invoke(cli, ["dedup", str(path), "--workers", "2", "--no-progress",
                                 "--format", "json"])
    assert json.loads(pooled.output)["pairs"] == data["pairs"]  # hashed in worker processes
    out = tmp_path / "clean.json"
    assert not out.exists()
    removed = runner.invoke(cli, ["dedup", str(path), "--remove", "near", "-o", str(out)])
    assert removed.exit_code == 0, removed.output
    assert len(json.loads(out.read_text())["images"]) == 6
    assert "near-duplicate" in removed.output
    assert runner.invoke(cli, ["dedup", str(path), "--remove", "near"]).exit_code == 2
    over = runner.invoke(cli, ["dedup", str(path), "--remove", "near", "-o", str(path)])
    assert over.exit_code == 2 and "would be written over" in over.output
    # Against the train file: the last input is written without its copies of train images.
    leak = runner.invoke(cli, ["dedup", str(tinycoco["train_json"]), str(path), "--images",
                               str(tinycoco["train_images"]), "--images", str(path.parent),
                               "--remove", "exact", "-o", str(tmp_path / "val_clean.json"),
                               "--format", "json"])
    assert leak.exit_code == 0, leak.output
    assert json.loads(leak.output)["removed_from"] == str(path)
    names = [im["file_name"] for im in json.loads((tmp_path / "val_clean.json").read_text())["images"]]
    assert names == ["small.jpg"]
    clean = runner.invoke(cli, ["dedup", str(tinycoco["val_json"]), "--images",
                                str(tinycoco["val_images"])])
    assert clean.exit_code == 0 and "0 exact pair(s)" in clean.output


def test_hashes_see_the_image_as_instkit_does(tmp_path: Path, tinycoco) -> None:
    import numpy as np

    photo = _photos(tinycoco, 1)[0]
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    rgb.save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    rgb.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "turned.jpg", quality=95)
    tagged = dedup_module.phash(tmp_path / "tagged.jpg")
    assert hamming(tagged, dedup_module.phash(tmp_path / "turned.jpg")) <= 2
    assert hamming(tagged, dedup_module.phash(photo)) > 12  # the unturned photo is another image
    # A 16-bit grayscale PNG hashes like its 8-bit version (scaled, not clipped at 255).
    gray = np.asarray(rgb.convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257).save(tmp_path / "deep.png")
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "flat.png")
    assert hamming(dedup_module.phash(tmp_path / "deep.png"),
                   dedup_module.phash(tmp_path / "flat.png")) <= 2
