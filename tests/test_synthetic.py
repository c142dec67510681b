"""The synthetic dataset: reproducible, and holding every case it promises."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

import instkit
from instkit.synthetic import CLASS_NAMES, make_samples, write_dataset


def test_same_seed_same_samples_other_seed_other_samples():
    a, b = make_samples(6, seed=11), make_samples(6, seed=11)
    assert all(np.array_equal(x.image, y.image) and x.instances == y.instances
               for x, y in zip(a, b))
    c = make_samples(6, seed=12)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c))


def test_it_holds_occlusion_holes_multipart_crowds_and_keypoints():
    samples = make_samples(40, seed=0)
    table = samples[0].meta.categories
    ids = np.concatenate([s.instances.ids for s in samples])
    assert len(np.unique(ids)) == len(ids)
    seen = {"occluded": 0, "hole": 0, "multipart": 0, "crowd": 0, "keypoints": 0}
    for sample in samples:
        inst = sample.instances
        assert np.array_equal(inst.boxes, inst.masks.boxes())  # boxes are tight
        assert (inst.masks.area() >= 16).all()
        dense = inst.masks.to_dense()
        for i, item in enumerate(inst.masks.items):
            name = CLASS_NAMES[int(inst.labels[i])]
            if inst.iscrowd[i]:
                seen["crowd"] += 1
                assert inst.masks.kinds[i] == "rle" and item.uncompressed
                continue
            if name in ("circle", "square", "triangle", "star") and inst.masks.kinds[i] == "bitmap":
                seen["occluded"] += 1
            if name == "ring" and (ndimage.binary_fill_holes(dense[i]) & ~dense[i]).any():
                seen["hole"] += 1
            if name == "pair" and inst.masks.kinds[i] == "polygon":
                assert len(item.parts) == 2
                seen["multipart"] += 1
            if name == "triangle":
                kp = inst.keypoints[i]
                h, w = sample.image_size
                inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
                labelled = kp[:, 2] > 0
                assert inside[labelled].all() and (kp[~labelled] == 0).all()
                seen["keypoints"] += int(labelled.all())
            else:
                assert (inst.keypoints[i] == 0).all()
    assert all(count > 0 for count in seen.values()), seen
    assert table.flip_pairs() == [(1, 2)]
    assert table.ids == [1, 3, 4, 7, 8, 10]


def test_written_dataset_reads_back_identically(tmp_path):
    path = write_dataset(tmp_path, num_images=5, seed=4)
    dataset = instkit.read_coco(path)
    for original, read in zip(make_samples(5, seed=4), dataset):
        assert np.array_equal(original.image, read.image)
        assert original.instances.masks == read.instances.masks
        assert np.array_equal(original.instances.ids, read.instances.ids)
        assert np.array_equal(original.instances.labels, read.instances.labels)
