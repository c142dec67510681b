"""Masks: oracle tests against pycocotools, conversions between forms, errors."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import given
from hypothesis import strategies as st

import instkit
from instkit.errors import MaskError
from instkit.masks import (
    BitmapMask,
    Masks,
    PolygonMask,
    RLEMask,
    decode_rle_counts,
    encode_rle_counts,
    rle_from_coco,
    tight_bitmap,
)
from instkit.testing import strategies as S


def _runs_of(mask: np.ndarray) -> list[int]:
    """Reference run lengths: column-major, starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    runs, current, length = [], 0, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return runs


@st.composite
def sized_masks(draw, allow_empty=True):
    size = draw(S.image_sizes(1, 40))
    return draw(S.dense_masks(size, allow_empty=allow_empty))


@given(sized_masks())
def test_rle_encode_and_decode_are_bit_exact_with_pycocotools(mask):
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    column = Masks.from_dense(mask[None])
    assert column.rle_counts()[0] == bytes(reference["counts"])
    assert decode_rle_counts(reference["counts"]).tolist() == _runs_of(mask)
    assert encode_rle_counts(_runs_of(mask), mask.shape) == bytes(reference["counts"])
    assert np.array_equal(column.to_dense()[0], mask_utils.decode(reference).astype(bool))


@given(sized_masks())
def test_area_and_box_match_pycocotools(mask):
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = mask_utils.toBbox(reference)
    for column in (Masks.from_dense(mask[None]), Masks([RLEMask(bytes(reference["counts"]))],
                                                        mask.shape)):
        assert column.area()[0] == mask_utils.area(reference)
        if mask.any():
            assert column.boxes()[0].tolist() == [x, y, x + w, y + h]
        else:
            assert column.boxes()[0].tolist() == [0, 0, 0, 0]


@st.composite
def sized_polygons(draw):
    size = draw(S.image_sizes(4, 48))
    return size, draw(S.polygons(size, degenerate=True, allow_outside=True))


@given(sized_polygons())
def test_polygon_rasterisation_is_identical_to_frpyobjects_merge_decode(case):
    (h, w), polygon = case
    reference = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in polygon.parts], h, w))
    ).astype(bool)
    column = Masks([polygon], (h, w))
    assert np.array_equal(column.to_dense()[0], reference)
    assert np.array_equal(column.to_bitmaps().to_dense()[0], reference)
    assert column.area()[0] == reference.sum()


@given(S.masks(max_size=5))
def test_every_form_converts_to_the_same_pixels(column):
    dense = column.to_dense()
    assert np.array_equal(column.to_bitmaps().to_dense(), dense)
    assert np.array_equal(column.to_rle_masks().to_dense(), dense)
    assert np.array_equal(Masks.from_rles(column.to_rle(), column.image_size).to_dense(), dense)
    assert np.array_equal(Masks.from_dense(dense).to_dense(), dense)
    assert np.array_equal(column.area(), dense.sum(axis=(1, 2)))
    assert Masks.from_dense(dense) == column


@given(S.masks(min_size=1, max_size=6), st.data())
def test_indexing_and_concatenation_keep_masks_in_order(column, data):
    n = len(column)
    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    picked = column[np.array(keep, dtype=bool)]
    assert np.array_equal(picked.to_dense(), column.to_dense()[np.array(keep, dtype=bool)])
    order = data.draw(st.permutations(range(n)))
    assert np.array_equal(column[np.array(order)].to_dense(), column.to_dense()[order])
    joined = Masks.cat([column, column[::-1]])
    assert len(joined) == 2 * n
    assert np.array_equal(joined.to_dense()[n:], column.to_dense()[::-1])


def test_rle_inputs_as_str_bytes_and_list_are_one_mask():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:6] = True
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_bytes = {"size": [5, 7], "counts": bytes(encoded["counts"])}
    as_str = {"size": [5, 7], "counts": bytes(encoded["counts"]).decode()}
    as_list = {"size": [5, 7], "counts": _runs_of(mask)}
    column = Masks.from_rles([as_bytes, as_str, as_list], (5, 7))
    assert np.array_equal(column.to_dense(), np.stack([mask] * 3))
    assert column.items[2].uncompressed and not column.items[0].uncompressed


def test_memory_grows_with_object_area_not_image_area():
    mask = np.zeros((4, 2000, 2000), dtype=bool)
    for i in range(4):
        mask[i, 100 * i : 100 * i + 20, 50:80] = True
    column = Masks.from_dense(mask)
    assert column.nbytes == 4 * 20 * 30
    assert column.to_rle_masks().nbytes < 4 * 128  # about two runs per column
    assert np.array_equal(column.to_dense(), mask)


def test_to_polygons_stays_close_on_real_masks(tinycoco):
    dataset = instkit.read_coco(tinycoco["val_json"], tinycoco["val_images"])
    ious = []
    for sample in dataset:
        column = sample.instances.masks
        back = column.to_bitmaps().to_polygons()
        iou = mask_utils.iou(back.to_rle(), column.to_rle(), [0] * len(column))
        ious.extend(np.diag(np.asarray(iou)).tolist())
    assert min(ious) > 0.75
    assert float(np.mean(ious)) > 0.95


def test_to_polygons_of_a_rectangle_is_exact():
    mask = np.zeros((1, 20, 30), dtype=bool)
    mask[0, 3:9, 4:17] = True
    polygon = Masks.from_dense(mask).to_polygons()
    assert polygon.kinds == ["polygon"]
    assert np.array_equal(polygon.to_dense(), mask)


def test_tight_bitmap_and_offsets():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 6:8] = True
    item = tight_bitmap(mask)
    assert item.offset == (2, 6) and item.bitmap.shape == (3, 2)
    assert Masks([item], (10, 10)).boxes()[0].tolist() == [6, 2, 8, 5]
    assert tight_bitmap(np.zeros((3, 3))).bitmap.shape == (0, 0)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([[1, 2, 3, 4, 5]], "at least 3"),
        ([[1, 2, 3, 4]], "at least 3"),
        ([[0, 0, 1, float("nan"), 2, 2]], "NaN"),
        ([["a", 1, 2, 3, 4, 5]], "not a list of numbers"),
    ],
)
def test_bad_polygons_raise_mask_error(parts, message):
    with pytest.raises(MaskError, match=message):
        Masks.from_polygons([parts], (10, 10))


def test_bad_rles_raise_mask_error():
    from instkit.errors import RLEError, SchemaError

    with pytest.raises(RLEError) as info:
        rle_from_coco({"size": [4, 4], "counts": [16]}, (5, 5))
    assert info.value.code == "rle-size-mismatch"
    with pytest.raises(RLEError) as info:
        rle_from_coco({"size": [4, 4], "counts": [10, 5]}, (4, 4))
    assert info.value.code == "rle-counts-sum"
    with pytest.raises(RLEError) as info:
        rle_from_coco({"size": [4, 4], "counts": "\x01\x02"}, (4, 4))
    assert info.value.code == "rle-invalid" and isinstance(info.value, MaskError)
    for size in (["x", 4], [None, 4], ["4", "4"], [True, 4], [4]):  # issue 12, reproducer 5
        with pytest.raises(SchemaError) as info:
            rle_from_coco({"size": size, "counts": [16]}, (4, 4))
        assert info.value.code == "schema-type"
    with pytest.raises(RLEError):
        rle_from_coco({"size": [4, 4], "counts": "\u00e9"}, (4, 4))
    with pytest.raises(MaskError, match="does not fit"):
        Masks([BitmapMask(np.ones((3, 3), bool), (8, 8))], (10, 10))
    with pytest.raises(TypeError, match="PolygonMask, RLEMask or BitmapMask"):
        Masks(["not a mask"], (4, 4))  # type: ignore[list-item]
    with pytest.raises(MaskError, match="concatenate"):
        Masks.cat([Masks.empty((4, 4)), Masks.empty((5, 5))])


def test_polygon_part_checks_survive_direct_construction():
    with pytest.raises(MaskError):
        PolygonMask((np.array([1.0, 2.0, 3.0, 4.0]),))


def test_tight_bitmap_matches_a_plain_reference():
    rng = np.random.default_rng(3)
    for shape in [(64, 64), (37, 53), (5, 8), (40, 1), (1, 17)]:
        for _ in range(20):
            mask = (rng.random(shape) > rng.choice([0.5, 0.97, 0.999, 1.0])).astype(np.uint8)
            ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            for form in (mask, mask.astype(bool), mask.astype(np.int32), np.asfortranarray(mask)):
                item = tight_bitmap(form, offset=(2, 3))
                if ys.size == 0:
                    assert item.bitmap.shape == (0, 0)
                    continue
                expected = mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].astype(bool)
                assert item.offset == (ys[0] + 2, xs[0] + 3)
                assert np.array_equal(item.bitmap, expected)
    strided = np.zeros((10, 20), dtype=np.uint8)
    strided[3:5, 4:9] = 1
    assert tight_bitmap(strided[:, ::2]).bitmap.shape == (2, 3)  # non-contiguous columns


def test_more_than_255_masks_have_an_area():
    # Issue 12, reproducer 1: pycocotools' area() fails from 256 RLEs on (NumPy 2).
    masks = Masks.from_polygons([[[0, 0, 4, 0, 4, 4]]] * 300, (10, 10))
    areas = masks.area()
    assert areas.shape == (300,) and (areas == areas[0]).all() and areas[0] > 0
    expected = mask_utils.area(mask_utils.frPyObjects([[0, 0, 4, 0, 4, 4]], 10, 10))[0]
    assert areas[0] == expected


def test_rle_decoder_refuses_what_pycocotools_reads_differently():
    # Issue 12, reproducer 7: 18 digits of one number; pycocotools' C shift wraps, numpy's not.
    from instkit.masks import RLE_MAX_DIGITS, decode_rle_counts

    with pytest.raises(MaskError, match="characters"):
        decode_rle_counts("PPPPPPPPPPPPPPPPP?`<")
    with pytest.raises(MaskError):
        rle_from_coco({"size": [20, 20], "counts": "PPPPPPPPPPPPPPPPP?`<"}, (20, 20))
    # Everything pycocotools' own encoder writes (up to RLE_MAX_DIGITS per number) decodes
    # to pycocotools' runs, including long runs of big images.
    rng = np.random.default_rng(0)
    for h, w in ((20, 20), (4000, 3000), (46000, 46000)):
        runs = rng.integers(1, h * w // 8, size=6).tolist()
        runs.append(h * w - sum(runs))
        counts = mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)["counts"]
        assert max(len(n) for n in _numbers(counts)) <= RLE_MAX_DIGITS
        assert decode_rle_counts(counts).tolist() == runs


def _numbers(counts: bytes) -> list[bytes]:
    out, start = [], 0
    for i, c in enumerate(counts):
        if not (c - 48) & 0x20:
            out.append(counts[start : i + 1])
            start = i + 1
    return out


def test_bitmap_rle_follows_the_box_not_the_image():
    # Found by the fuzz harness (issue 12): a bitmap in a 1,000,000-pixel-high image was encoded
    # through a full-height band, which pycocotools' encode allocates 4 bytes a pixel for.
    rng = np.random.default_rng(1)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        bh, bw = int(rng.integers(1, h - y0 + 1)), int(rng.integers(1, w - x0 + 1))
        if rng.random() < 0.3:
            y0, bh = 0, h  # full-height crops: one column ends where the next begins
        dense = np.zeros((h, w), bool)
        dense[y0 : y0 + bh, x0 : x0 + bw] = rng.random((bh, bw)) < rng.random()
        item = BitmapMask(dense[y0 : y0 + bh, x0 : x0 + bw].copy(), (y0, x0))
        expected = mask_utils.encode(np.asfortranarray(dense.astype(np.uint8)))["counts"]
        assert Masks([item], (h, w)).rle_counts()[0] == expected
    tall = Masks([BitmapMask(np.ones((20, 30), bool), (999_000, 5))], (1_000_000, 640))
    assert mask_utils.area(tall.to_rle()[0]) == 600


def test_batch_decoder_equals_one_string_decoding_across_chunks(monkeypatch):
    """decode_rle_counts_batch over many strings (in several cache-sized chunks) gives each
    string's runs, totals, areas and refusal exactly as decoding it alone does."""
    import instkit.masks as masks_module
    from instkit.masks import RLE_OK, decode_rle_counts_batch

    rng = np.random.default_rng(1)
    strings: list[bytes | str] = []
    for k in range(120):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random()
        counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
        strings.append(counts if k % 2 else counts.decode())
    bad = [b"0\x01", b"0o", "caf\u00e9", b"ooooooo0", b""]
    strings[10:10] = bad
    monkeypatch.setattr(masks_module, "_DECODE_CHUNK_CHARACTERS", 64)  # many chunks
    batch = decode_rle_counts_batch(strings)
    for i, counts in enumerate(strings):
        runs = batch.runs[batch.offsets[i] : batch.offsets[i + 1]]
        try:
            alone = decode_rle_counts(counts)
        except MaskError:
            assert batch.status[i] != RLE_OK, i
            continue
        assert batch.status[i] == RLE_OK
        assert runs.tolist() == alone.tolist()
        assert batch.totals[i] == alone.sum() and batch.areas[i] == alone[1::2].sum()
    assert (batch.status[10:14] != RLE_OK).all() and batch.status[14] == RLE_OK
