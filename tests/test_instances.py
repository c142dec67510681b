"""Instances: rows stay together under indexing, concatenation and replacement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instkit import Instances, Masks
from instkit.errors import InstancesError
from instkit.testing import strategies as S


def _row(inst: Instances, i: int) -> tuple:
    """Everything instance ``i`` is, as plain values."""
    mask = inst.masks[i].to_dense()[0] if inst.masks is not None else None
    return (
        int(inst.ids[i]),
        int(inst.labels[i]),
        tuple(inst.boxes[i].tolist()),
        bool(inst.iscrowd[i]),
        None if inst.keypoints is None else inst.keypoints[i].tobytes(),
        None if inst.scores is None else float(inst.scores[i]),
        None if mask is None else mask.tobytes(),
    )


@given(S.instances(min_size=0, max_size=6), st.data())
def test_every_index_form_keeps_rows_whole(inst, data):
    n = len(inst)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    order = np.array(data.draw(st.permutations(range(n))), dtype=np.int64)
    for key, expected in (
        (keep, np.flatnonzero(keep)),
        (order, order),
        (slice(None, None, -1), np.arange(n)[::-1]),
        (slice(1, None, 2), np.arange(n)[1::2]),
    ):
        picked = inst[key]
        assert isinstance(picked, Instances) and picked is not inst
        assert len(picked) == len(expected)
        for j, i in enumerate(expected):
            assert _row(picked, j) == _row(inst, int(i))
    if n:
        one = inst[-1]
        assert len(one) == 1 and _row(one, 0) == _row(inst, n - 1)


@given(S.instances(min_size=0, max_size=4), S.instances(min_size=0, max_size=4))
def test_concatenation_appends_rows(a, b):
    if a.image_size != b.image_size or (a.keypoints is None) != (b.keypoints is None) or (
        a.scores is None) != (b.scores is None) or (a.keypoints is not None and
                                                    a.keypoints.shape[1] != b.keypoints.shape[1]):
        with pytest.raises(InstancesError):
            Instances.cat([a, b])
        return
    joined = Instances.cat([a, b])
    assert len(joined) == len(a) + len(b)
    assert joined[: len(a)] == a
    assert joined[len(a):] == b


@given(S.instances(max_size=5))
def test_equality_and_copy(inst):
    assert inst == inst[np.arange(len(inst))]
    if len(inst):
        changed = inst.replace(labels=inst.labels + 1)
        assert changed != inst
        assert np.array_equal(changed.ids, inst.ids)


def test_empty_instances_work_everywhere():
    empty = Instances.empty((10, 20), num_keypoints=17)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.keypoints.shape == (0, 17, 3)
    assert empty.masks.to_dense().shape == (0, 10, 20)
    assert len(empty[np.zeros(0, dtype=bool)]) == 0
    assert len(empty[[]]) == 0
    assert len(Instances.cat([empty, empty])) == 0
    assert "n=0" in repr(empty)


def test_boxes_default_to_the_masks_tight_boxes():
    dense = np.zeros((2, 8, 8), dtype=bool)
    dense[0, 1:3, 2:5] = True
    dense[1, 4:8, 0:1] = True
    inst = Instances(image_size=(8, 8), labels=[0, 1], masks=Masks.from_dense(dense))
    assert inst.boxes.tolist() == [[2, 1, 5, 3], [0, 4, 1, 8]]
    assert inst.boxes.dtype == np.float32
    moved = inst.replace(boxes=np.zeros((2, 4))).with_boxes_from_masks()
    assert moved.boxes.tolist() == inst.boxes.tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"boxes": np.zeros((3, 5)), "labels": [0, 0, 0]}, r"boxes: expected shape \(N, 4\), got \(3, 5\)"),
        ({"boxes": np.zeros((3, 4)), "labels": [0, 0]}, r"labels: expected shape \(3,\), got \(2,\)"),
        ({"boxes": np.zeros((2, 4)), "labels": [0, 0], "keypoints": np.zeros((2, 5, 2))},
         r"keypoints: expected shape \(2, K, 3\), got \(2, 5, 2\)"),
        ({"boxes": np.zeros((2, 4)), "labels": [0, 0], "iscrowd": [0]},
         r"iscrowd: expected shape \(2,\), got \(1,\)"),
        ({"boxes": np.zeros((2, 4)), "labels": [0, 0], "masks": Masks.empty((4, 4))},
         r"expected 2 masks"),
        ({"boxes": np.zeros((0, 4)), "labels": [], "masks": Masks.empty((5, 5))},
         r"expected image size \(4, 4\), got \(5, 5\)"),
        ({"boxes": np.zeros((2, 4)), "labels": [0, 0], "extras": {"z": [1]}},
         r"extras\['z'\]: expected first axis of length 2"),
        ({"boxes": [["a", 0, 0, 0]], "labels": [0]}, r"boxes: cannot convert"),
    ],
)
def test_validation_gives_expected_and_actual(kwargs, message):
    with pytest.raises(InstancesError, match=message):
        Instances(image_size=(4, 4), **kwargs)


def test_index_errors():
    inst = Instances(image_size=(4, 4), boxes=np.zeros((2, 4)), labels=[0, 1])
    with pytest.raises(IndexError):
        inst[2]
    with pytest.raises(IndexError, match=r"shape \(2,\)"):
        inst[np.array([True])]
    with pytest.raises(TypeError):
        inst[np.array([0.5])]
    with pytest.raises(TypeError, match="columns"):
        list(inst)


def test_extras_travel_with_rows():
    inst = Instances(image_size=(4, 4), boxes=np.zeros((3, 4)), labels=[0, 1, 2],
                     extras={"source": ["a", "b", "c"], "weight": [0.1, 0.2, 0.3]})
    picked = inst[[2, 0]]
    assert picked.extras["source"].tolist() == ["c", "a"]
    assert picked.extras["weight"].tolist() == [0.3, 0.1]
    text = repr(inst)
    assert "n=3" in text and "extras=['source', 'weight']" in text
