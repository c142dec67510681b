"""The probe-based alignment checker: a catalogue of broken pipelines, each caught under its named
invariant with a shrunk example that reproduces it, and no false alarms on correct pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from instkit.synthetic import make_samples
from instkit.testing import assert_aligned, check_alignment
from instkit.testing.probe import Codebook, decode, render
from instkit.transforms import Augment
from instkit.transforms._albu import A
from tests.testing.broken import CATALOGUE, NaivePaste, TinyMosaic, image_flipped_masks_not


def _real():
    return make_samples(3, seed=1, image_size=(64, 64), max_instances=6)


@pytest.mark.parametrize(("broken", "invariant"), CATALOGUE,
                         ids=[getattr(b, "__name__", type(b).__name__) for b, _ in CATALOGUE])
def test_each_broken_pipeline_is_caught_with_a_shrunk_reproducible_example(broken, invariant):
    real = _real()
    report = check_alignment(broken, real, max_examples=8, max_side=64, num_keypoints=3)
    assert invariant in report.invariants(), report.to_text()
    first = next(v for v in report.violations if v.invariant == invariant)
    assert first.example is not None and first.seed is not None
    # shrunk: the first violation of each invariant is cut to the fewest rows that still break it
    if invariant not in ("deterministic", "probe_offset"):
        assert len(first.example.instances) <= 2, first
    pool = real if getattr(broken, "needs_pool", False) else None
    again = first.reproduce(broken, pool=pool)
    assert invariant in {v.invariant for v in again}, again


@pytest.mark.parametrize("correct", [TinyMosaic(), NaivePaste()], ids=["mosaic", "paste"])
def test_users_own_mixing_transforms_pass_and_their_partners_are_probed(correct):
    real = _real()
    report = check_alignment(correct, real, max_examples=8, max_side=64, num_keypoints=3)
    assert report.ok, report.to_text()
    # the rows mixed in are judged: relabel only them and the probe sees it
    class Relabelled:
        needs_pool = True

        def __init__(self, inner):
            self.inner = inner

        def with_pool(self, pool):
            return Relabelled(self.inner.with_pool(pool))

        def __call__(self, sample, *, seed=None):
            out = self.inner(sample, seed=seed)
            inst = out.instances
            mixed = ~np.isin(inst.ids, sample.instances.ids)
            labels = np.where(mixed, inst.labels + 1, inst.labels)
            return out.replace(instances=inst.replace(labels=labels))

    relabelled = Relabelled(correct)
    bad = check_alignment(relabelled, real, generated=False)
    assert "probe_label" in bad.invariants(), bad.to_text()


def _photometric(strength: float) -> list:
    return [A.RandomBrightnessContrast(brightness_range=(-strength, strength),
                                       contrast_range=(-0.5, 0.5), p=1.0),
            A.HueSaturationValue(hue_shift_range=(-30, 30), sat_shift_range=(-60, 60),
                                 val_shift_range=(-40, 40), p=1.0),
            A.RandomGamma(gamma_range=(60, 160), p=1.0),
            A.RGBShift(r_shift_range=(-30, 30), g_shift_range=(-30, 30),
                       b_shift_range=(-30, 30), p=1.0)]


def test_photometric_transforms_do_not_break_the_codes():
    real = _real()
    colour = Augment(_photometric(0.3))
    assert check_alignment(colour, real, max_examples=10, max_side=64).ok
    def flipped_then_coloured(sample, *, seed=None):
        return colour(image_flipped_masks_not(sample), seed=seed)
    caught = check_alignment(flipped_then_coloured, real, generated=False)
    assert "probe_code" in caught.invariants(), caught.to_text()


def test_decode_reads_back_every_code_through_a_monotone_colour_map():
    sample = make_samples(1, seed=2, image_size=(40, 48), max_instances=8)[0]
    book = Codebook()
    painted = book.paint(0, sample)
    lut = np.clip(40 + 0.6 * np.arange(256), 0, 255).astype(np.uint8)  # low contrast + offset
    tint = np.array([1.0, 0.8, 0.9])
    def through(image):
        return np.clip(lut[image] * tint, 0, 255).astype(np.uint8)
    white = through(np.full((40, 48, 3), 255, np.uint8))
    black = through(np.zeros((40, 48, 3), np.uint8))
    planes = [through(render(painted, b)) for b in range(book.bits)]
    decoded = decode(white, black, planes)
    np.testing.assert_array_equal(decoded.codes, painted.code_map)


def test_identity_passes_on_raw_coco_and_the_probe_catches_a_flip_there(tinycoco):
    from instkit.io.coco import read_coco

    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    real = [coco[i] for i in range(len(coco))]
    def identity(sample, *, seed=None):
        return sample
    report = check_alignment(identity, real, generated=False)
    assert report.ok, report.to_text()
    assert report.instances_checked > 100
    flipped = check_alignment(image_flipped_masks_not, real[:2], generated=False,
                              shrink_examples=False)
    assert "probe_code" in flipped.invariants()


def test_assert_aligned_runs_the_probe_when_given_the_transform():
    sample = _real()[0]
    assert_aligned(sample, Augment([A.HorizontalFlip(p=1.0)]), seed=3)
    with pytest.raises(AssertionError, match="probe_code"):
        assert_aligned(sample, image_flipped_masks_not, seed=3)
