"""``split_dataset`` / ``instkit split``: stratified proportions, groups kept whole, seeded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from instkit.cli import cli
from instkit.errors import InstkitError
from instkit.io.coco import read_coco
from instkit.ops import parse_ratios, split_dataset, write_splits
from instkit.ops.split import SplitResult

from ._data import annotation, document, write

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _multilabel(tmp_path: Path, *, num_images: int = 240, seed: int = 0, videos: int = 0) -> Path:
    """Images with 1-3 classes each, class frequencies from common to rare; with ``videos``,
    frames named ``vidK/frameJ.jpg`` and an image field ``video_id``."""
    rng = np.random.default_rng(seed)
    weights = np.asarray([40, 20, 10, 6, 3, 1.5], dtype=np.float64)
    weights /= weights.sum()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        video = int(rng.integers(videos)) if videos else None
        name = f"vid{video}/frame{image_id:04d}.jpg" if videos else f"{image_id:04d}.jpg"
        image = {"id": image_id, "file_name": name, "width": 32, "height": 32}
        if video is not None:
            image["video_id"] = video
        images.append(image)
        classes = rng.choice(6, size=int(rng.integers(0, 4)), replace=False, p=weights)
        for c in classes:
            for _ in range(int(rng.integers(1, 3))):
                annotations.append(annotation(len(annotations) + 1, image_id, int(c) + 1))
    categories = [{"id": c + 1, "name": f"class{c}"} for c in range(6)]
    return write(tmp_path / "data.json", document(images, annotations, categories))


def assert_proportions(result: SplitResult, tolerance: float) -> None:
    """Every class's images in each split within ``tolerance`` (fraction of the class's images,
    at least 1.5 images) of the split's share."""
    classes = next(iter(result.counts.values()))
    for name in classes:
        total = sum(result.counts[s][name]["images"] for s in result.subsets)
        for split, share in result.ratios.items():
            got = result.counts[split][name]["images"]
            allowed = max(1.5, tolerance * total)
            if abs(got - share * total) > allowed:
                raise AssertionError(f"{name} in {split}: {got} of {total} images, wanted "
                                     f"{share * total:.1f} +- {allowed:.1f}")


def assert_groups_whole(result: SplitResult, dataset, key) -> None:
    """No group's images in two splits."""
    where: dict[object, str] = {}
    for split, indices in result.subsets.items():
        for i in indices:
            group = key(dataset[i])
            if where.setdefault(group, split) != split:
                raise AssertionError(f"group {group!r} is in {where[group]} and {split}")


def _deviation(result: SplitResult) -> float:
    classes = next(iter(result.counts.values()))
    out = 0.0
    for name in classes:
        total = sum(result.counts[s][name]["images"] for s in result.subsets)
        out += sum(abs(result.counts[s][name]["images"] - share * total)
                   for s, share in result.ratios.items())
    return out


def _result_from(dataset, subsets: dict[str, list[int]]) -> SplitResult:
    """A ``SplitResult`` for a given assignment (to show the checkers fail on bad splits)."""
    from instkit.ops.common import class_counts

    counts = {s: class_counts([dataset[i] for i in idx], dataset.categories)
              for s, idx in subsets.items()}
    totals = {s: {"images": len(idx), "instances": 0} for s, idx in subsets.items()}
    return SplitResult(dict(RATIOS), 0, subsets, {s: [] for s in subsets}, len(dataset), 0, counts,
                       totals)


def test_every_image_in_exactly_one_split(tmp_path: Path) -> None:
    dataset = read_coco(_multilabel(tmp_path))
    result = split_dataset(dataset, RATIOS, seed=3)
    everything = sorted(i for idx in result.subsets.values() for i in idx)
    assert everything == list(range(len(dataset)))
    for split, share in RATIOS.items():
        assert abs(len(result.subsets[split]) - share * len(dataset)) <= 3


def test_stratified_proportions_per_class(tmp_path: Path) -> None:
    dataset = read_coco(_multilabel(tmp_path))
    result = split_dataset(dataset, RATIOS, seed=0)
    assert_proportions(result, tolerance=0.05)
    # Every class (the rarest has about 8 images) reaches every split.
    assert not any(result.missing().values())
    # Stratified beats a seeded random split of the same sizes by a wide margin.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(dataset))
    cut = np.cumsum([len(result.subsets[s]) for s in RATIOS])[:-1]
    random = _result_from(dataset, {s: sorted(part.tolist()) for s, part in
                                    zip(RATIOS, np.split(order, cut), strict=True)})
    assert _deviation(result) < 0.5 * _deviation(random)


def test_proportion_check_fails_on_an_unstratified_split(tmp_path: Path) -> None:
    dataset = read_coco(_multilabel(tmp_path))
    # Images holding class0 first: train gets nearly all of them.
    has0 = [i for i in range(len(dataset)) if 0 in dataset[i].instances.labels]
    rest = [i for i in range(len(dataset)) if i not in set(has0)]
    order = has0 + rest
    n_train, n_val = int(0.7 * len(order)), int(0.15 * len(order))
    broken = _result_from(dataset, {"train": sorted(order[:n_train]),
                                    "val": sorted(order[n_train:n_train + n_val]),
                                    "test": sorted(order[n_train + n_val:])})
    with pytest.raises(AssertionError, match="class0"):
        assert_proportions(broken, tolerance=0.05)


def test_rare_classes_reach_every_split_with_min_per_split(tmp_path: Path) -> None:
    # Three images of a rare class and 0.8/0.1/0.1: plain iterative stratification puts all
    # three in train; min_per_split=1 gives val and test one each.
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 32, "height": 32} for i in range(1, 31)]
    annotations = [annotation(i, i, 1) for i in range(1, 31)]
    annotations += [annotation(100 + i, i, 2) for i in (4, 9, 17)]
    path = write(tmp_path / "rare.json", document(
        images, annotations, [{"id": 1, "name": "common"}, {"id": 2, "name": "rare"}]))
    dataset = read_coco(path)
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    served = split_dataset(dataset, ratios, seed=0)
    assert [served.counts[s]["rare"]["images"] for s in ratios] == [1, 1, 1]
    plain = split_dataset(dataset, ratios, seed=0, min_per_split=0)
    assert [plain.counts[s]["rare"]["images"] for s in ratios] == [3, 0, 0]
    assert plain.missing()["val"] == ["rare"]


def test_a_one_image_class_stays_in_train_when_a_rarer_split_wants_its_image(
        tmp_path: Path) -> None:
    # Image 2 holds "pair"'s second image (val lacks "pair") and "single"'s only image. Serving
    # val first would leave "single" out of train for good; it must stay in train, for every
    # seed (which decides whether "pair" or "single" is placed first).
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 32, "height": 32} for i in range(1, 21)]
    annotations = [annotation(i, i, 1) for i in range(1, 21)]
    annotations += [annotation(101, 1, 2), annotation(102, 2, 2),  # pair: images 1 and 2
                    annotation(103, 2, 3),  # single: image 2
                    annotation(104, 1, 4)]  # first: image 1 only, places image 1 early
    path = write(tmp_path / "conflict.json", document(images, annotations, [
        {"id": 1, "name": "common"}, {"id": 2, "name": "pair"}, {"id": 3, "name": "single"},
        {"id": 4, "name": "first"}]))
    dataset = read_coco(path)
    for seed in range(12):
        result = split_dataset(dataset, {"train": 0.8, "val": 0.2}, seed=seed)
        assert result.counts["train"]["single"]["images"] == 1, seed
        assert result.counts["train"]["first"]["images"] == 1, seed


@pytest.mark.parametrize("how", ["regex", "field"])
def test_groups_are_never_split(tmp_path: Path, how: str) -> None:
    dataset = read_coco(_multilabel(tmp_path, videos=30))
    if how == "regex":
        result = split_dataset(dataset, RATIOS, seed=1, group_by=r"^(vid\d+)/")
    else:
        result = split_dataset(dataset, RATIOS, seed=1, group_field="video_id")
    assert result.num_groups == 30 and result.ungrouped == 0

    def key(sample):
        return re.match(r"^(vid\d+)/", sample.meta.file_name).group(1)

    assert_groups_whole(result, dataset, key)
    # Groups coarsen the split, but the shares stay near the ratios.
    for split, share in RATIOS.items():
        assert abs(len(result.subsets[split]) / len(dataset) - share) < 0.06
    # The same check fails when one frame is moved to another split.
    moved = {s: list(v) for s, v in result.subsets.items()}
    moved["test"].append(moved["train"].pop())
    broken = _result_from(dataset, moved)
    with pytest.raises(AssertionError, match="is in"):
        assert_groups_whole(broken, dataset, key)


def test_images_matching_no_group_are_their_own_group(tmp_path: Path) -> None:
    dataset = read_coco(_multilabel(tmp_path, num_images=40))
    result = split_dataset(dataset, RATIOS, group_by=r"^(vid\d+)/")
    assert result.ungrouped == 40 and result.num_groups == 40


def test_seeded_and_deterministic(tmp_path: Path) -> None:
    dataset = read_coco(_multilabel(tmp_path))
    a = split_dataset(dataset, RATIOS, seed=7)
    b = split_dataset(read_coco(tmp_path / "data.json"), RATIOS, seed=7)
    c = split_dataset(dataset, RATIOS, seed=8)
    assert a.subsets == b.subsets
    assert a.subsets != c.subsets


def test_written_splits_share_categories_and_keep_ids(tmp_path: Path, tinycoco) -> None:
    dataset = read_coco(tinycoco["train_json"], tinycoco["train_images"])
    result = split_dataset(dataset, parse_ratios("train=0.6,val=0.2,test=0.2"), seed=0)
    paths = write_splits(dataset, result, tmp_path / "out")
    original = json.loads(Path(tinycoco["train_json"]).read_text())
    by_id = {a["id"]: a for a in original["annotations"]}
    seen_images: set[int] = set()
    seen_annotations: set[int] = set()
    for split, path in paths.items():
        written = json.loads(Path(path).read_text())
        assert written["categories"] == original["categories"]
        ids = {im["id"] for im in written["images"]}
        assert ids == set(result.image_ids[split])
        seen_images |= ids
        for ann in written["annotations"]:
            assert ann["image_id"] in ids
            assert ann["category_id"] == by_id[ann["id"]]["category_id"]
            seen_annotations.add(ann["id"])
        back = read_coco(path, tinycoco["train_images"])
        assert back[0].image.shape[:2] == back[0].image_size
    assert seen_images == {im["id"] for im in original["images"]}
    assert seen_annotations == set(by_id)


def test_ratios_are_parsed_and_checked() -> None:
    assert parse_ratios("train=8,val=1,test=1") == pytest.approx(
        {"train": 0.8, "val": 0.1, "test": 0.1})
    for bad in ("train=0.8,val=0.1", "train", "train=x", "train=0.5,train=0.5", "a=-1,b=2", ""):
        with pytest.raises(InstkitError):
            parse_ratios(bad)


def test_cli_split_text_and_json(tmp_path: Path, tinycoco) -> None:
    runner = CliRunner()
    out = tmp_path / "splits"
    args = ["split", str(tinycoco["train_json"]), "--out", str(out), "--ratios",
            "train=0.6,val=0.2,test=0.2", "--seed", "2"]
    text = runner.invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "person" in text.output and "wrote test" in text.output
    result = runner.invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert sum(s["images"] for s in report["splits"].values()) == 32
    assert report["splits"]["train"]["per_class"]["person"]["images"] >= 1
    for split in ("train", "val", "test"):
        assert (out / f"{split}.json").is_file()


def test_cli_split_refuses_to_write_over_its_input(tmp_path: Path) -> None:
    path = _multilabel(tmp_path)
    (tmp_path / "train.json").write_text(path.read_text())
    result = CliRunner().invoke(cli, ["split", str(tmp_path / "train.json"), "--out",
                                      str(tmp_path)])
    assert result.exit_code == 2
    assert "would be written over" in result.output
    bad = CliRunner().invoke(cli, ["split", str(path), "--out", str(tmp_path / "o"),
                                   "--group-by", "("])
    assert bad.exit_code == 2 and "regular expression" in bad.output


def test_duplicate_images_kept_in_one_split(tmp_path: Path, tinycoco) -> None:
    from instkit.ops.dedup import duplicate_groups, find_duplicates

    from .test_dedup import _with_copies

    dataset = read_coco(_with_copies(tmp_path, tinycoco))  # 6 photos + an exact and a resized copy
    groups = duplicate_groups(find_duplicates([dataset]), "near")
    assert sorted(map(sorted, groups)) == [[0, 6], [1, 7]]
    assert duplicate_groups(find_duplicates([dataset]), "exact") == [[0, 6]]

    def split_of(result: SplitResult, index: int) -> str:
        return next(s for s, idx in result.subsets.items() if index in idx)

    ratios = {"train": 0.5, "val": 0.5}
    separated = 0
    for seed in range(10):
        plain = split_dataset(dataset, ratios, seed=seed, min_per_split=0)
        separated += any(split_of(plain, a) != split_of(plain, b) for a, b in groups)
        kept = split_dataset(dataset, ratios, seed=seed, min_per_split=0, together=groups)
        assert kept.joined == 2
        assert all(split_of(kept, a) == split_of(kept, b) for a, b in groups)
    assert separated  # without the groups, some seed puts a copy in the other split


def test_cli_split_group_duplicates(tmp_path: Path, tinycoco) -> None:
    from .test_dedup import _with_copies

    path = _with_copies(tmp_path, tinycoco)
    result = CliRunner().invoke(cli, ["split", str(path), "--out", str(tmp_path / "s"),
                                      "--ratios", "a=0.5,b=0.5", "--group-duplicates", "near",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["groups_joined_by_duplicates"] == 2 and report["groups"] == 6
