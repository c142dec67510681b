"""``Augment``: an albumentationsx pipeline that takes a ``Sample`` and returns a ``Sample``.

The pipeline runs one top-level transform at a time ("unit"), and no unit builds an
``(N, H, W)`` array unless it has to:

- **geometric units** that map the plane projectively (flips, transposes, turns, rotations,
  affine, perspective, resizes, crops, pads, and ``OneOf`` s of them) run in albumentationsx on
  the image and a few control points; instkit solves for the map the control points went
  through and moves each instance's compact mask itself (``instkit.transforms.geometry``):
  polygon vertices exactly, crop-local bitmaps over the window they land in, keypoints as
  points. A polygon stays a polygon;
- **pixel units** (albumentationsx's image-only transforms) touch the image only;
- **Mosaic** and **CopyAndPaste** are run by instkit on the compact forms, configured by the
  albumentationsx transform's own settings (grid, cell and target sizes, fit mode, centre range;
  scale range, blend, visibility threshold) and drawing from the same seeded generator;
- any other geometric transform (elastic, grid distortion, dropout of mask pixels, ...) is a
  **dense unit**: the masks are densified for that transform only, and the unit is named in
  ``repr(augment)`` and in ``sample.meta.extra["dense_transforms"]``.

Rows stay whole: labels, crowd flags, ids, scores and extras are re-attached from the source
row afterwards, never re-ordered. After the pipeline:

- boxes are the masks' tight boxes (``boxes_follow_masks=True``);
- a row is dropped whole, and recorded in ``sample.meta.drops``, when its mask left the frame
  (``cropped_out``), the visible share of its transformed box fell under ``min_visibility``
  (``below_min_visibility``), a pasted object covered it (``occluded``: all of it, or more than
  ``1 - min_visibility_after_paste`` of its pixels), its mask is empty (``empty_mask``) or
  smaller than ``min_area`` pixels (``below_min_area``);
- keypoints that leave the image, or that a pasted object covers, keep their coordinates and
  get visibility 0; after an odd number of reflections the left/right pairs are swapped;
- the ``coco_bbox`` / ``coco_area`` extras (they describe the source file) are removed.

Mixing transforms draw their partners from a pool bound with ``with_pool``; rows mixed in get
fresh ids unique in the sample and their source in the extras ``source_dataset`` /
``source_image_id`` / ``source_annotation_id``.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from instkit.errors import InstancesError, Location
from instkit.instances import Instances
from instkit.masks import BitmapMask, MaskItem, Masks, PolygonMask, tight_bitmap
from instkit.sample import Drop, Sample
from instkit.transforms._albu import A
from instkit.transforms.geometry import (
    Homography,
    clip_part,
    control_points,
    map_points_centre,
    map_points_edge,
    resize_map,
    solve_homography,
    visible_fraction,
    warp_item,
    warp_polygons,
)

_SOURCE_EXTRAS = ("source_dataset", "source_image_id", "source_annotation_id")
_GEOMETRY_EXTRAS = ("coco_bbox", "coco_area")
_BINDINGS = ("masks", "mask", "keypoints")
_KP = "_k"

# Transforms whose every draw maps the plane by one homography (checked on spare control points
# at run time; a draw that fails the check reruns densely with the same seed).
PROJECTIVE = frozenset({
    "HorizontalFlip", "VerticalFlip", "Transpose", "RandomRotate90", "D4", "SquareSymmetry",
    "Rotate", "SafeRotate", "Affine", "ShiftScaleRotate", "Perspective", "Resize",
    "LongestMaxSize", "SmallestMaxSize", "PadIfNeeded", "Pad", "RandomCrop", "CenterCrop", "Crop",
    "RandomResizedCrop", "RandomSizedCrop", "RandomSizedBBoxSafeCrop", "BBoxSafeRandomCrop",
    "AtLeastOneBBoxRandomCrop", "RandomCropFromBorders", "RandomScale", "NoOp",
})
# Geometric transforms whose draws depend on the boxes.
_NEEDS_BOXES = frozenset({"RandomSizedBBoxSafeCrop", "BBoxSafeRandomCrop",
                          "AtLeastOneBBoxRandomCrop"})
_SERIAL = ("Sequential", "SomeOf", "Compose")
# Transforms that draw nothing but whether they apply: their maps (pixel-edge coordinates)
# follow from the frame sizes before and after.
_KNOWN_MAPS = {
    A.HorizontalFlip: lambda size, out: Homography.scale_translate(-1.0, size[1], 1.0, 0.0, size),
    A.VerticalFlip: lambda size, out: Homography.scale_translate(1.0, 0.0, -1.0, size[0], size),
    A.Resize: resize_map,
}


def _leaves(transform: Any) -> list[Any]:
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return [leaf for child in inner for leaf in _leaves(child)]
    return [transform]


def _kind(transform: Any) -> str:
    """``pixel``, ``projective``, ``mosaic``, ``paste`` or ``dense``."""
    name = type(transform).__name__
    if name == "Mosaic":
        return "mosaic"
    if name == "CopyAndPaste":
        return "paste"
    leaves = _leaves(transform)
    if all(isinstance(leaf, A.ImageOnlyTransform) for leaf in leaves):
        return "pixel"
    geometric = [leaf for leaf in leaves if not isinstance(leaf, A.ImageOnlyTransform)]
    if any(type(leaf).__name__ not in PROJECTIVE for leaf in geometric):
        return "dense"
    # Two geometric leaves that can both apply would need clipping between them.
    if len(geometric) > 1 and type(transform).__name__ in _SERIAL:
        return "dense"
    return "projective"


def _check_version() -> None:
    from importlib.metadata import version

    found = version("albumentationsx")
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts < SUPPORTED_ALBUMENTATIONSX[0] or parts >= SUPPORTED_ALBUMENTATIONSX[1]:
        raise ImportError(
            f"instkit.transforms is tested with albumentationsx >= "
            f"{'.'.join(map(str, SUPPORTED_ALBUMENTATIONSX[0]))}, < "
            f"{'.'.join(map(str, SUPPORTED_ALBUMENTATIONSX[1]))}; found {found}. "
            "Install a supported version: pip install 'albumentationsx>=2.5.1,<2.6'"
        )


SUPPORTED_ALBUMENTATIONSX = ((2, 5), (2, 6))
_check_version()


# --- rows -------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One instance on its way through the pipeline."""

    source: int  # index into the call's sources (0: the sample itself)
    local: int  # row in that source's Instances
    item: MaskItem | None  # polygon or bitmap in the current frame (None: masks not carried)
    box: np.ndarray  # xyxy in the current frame (box-only rows)
    keypoints: np.ndarray | None  # (K, 3) pixel-centre x, y, visibility
    reflected: bool = False
    dropped: tuple[str, str] | None = None


@dataclass
class _State:
    image: np.ndarray
    rows: list[_Row]
    sources: list[Sample]
    dense_units: list[str] = field(default_factory=list)
    offered: int = 0
    owns_image: bool = False  # False while ``image`` may be the caller's (or a pool's) array

    def writable_image(self) -> np.ndarray:
        if not self.owns_image:
            self.image = self.image.copy()
            self.owns_image = True
        return self.image

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def alive(self) -> list[_Row]:
        return [row for row in self.rows if row.dropped is None]


class Augment:
    """Wrap an albumentationsx ``Compose`` (or a list of its transforms) for ``Sample`` s.

    Args:
        compose_or_transforms: an ``A.Compose`` (its transforms, probability, seed and bbox
            filter settings are used) or a list of albumentationsx transforms.
        binding: ``"masks"`` or ``"mask"`` (masks travel compactly either way) or
            ``"keypoints"`` (boxes + keypoints; masks are not carried).
        boxes_follow_masks: boxes become their masks' tight boxes (else the mapped boxes).
        min_area: minimum mask area in pixels (box area when there are no masks).
        min_visibility: minimum visible share of a row's transformed box, per transform.
        flip_pairs: keypoint index pairs swapped on reflections; default from the sample's
            category table (left/right names).
        seed: seeds the parameter draws when calls give no ``seed``; default: the Compose's.
        pool: partners of the mixing transforms (see ``with_pool``).
        mosaic_partners / paste_donors: how many pool samples to offer Mosaic, and the range of
            donor instances offered to CopyAndPaste.
        compact: False runs every geometric transform densely through albumentationsx (the
            reference the compact path is tested against).
        partner_cache: how many decoded pool images to keep for reuse as Mosaic neighbours and
            CopyAndPaste donors (least recently used first out; 0 decodes every time). Each
            DataLoader worker keeps its own.
    """

    def __init__(
        self,
        compose_or_transforms: Any,
        *,
        binding: str = "masks",
        boxes_follow_masks: bool = True,
        min_area: float | None = None,
        min_visibility: float | None = None,
        flip_pairs: Sequence[tuple[int, int]] | None = None,
        seed: int | None = None,
        pool: Sequence[Sample] | None = None,
        pool_name: str = "pool",
        mosaic_partners: int | None = None,
        paste_donors: tuple[int, int] = (1, 3),
        stage: str = "augment",
        compact: bool = True,
        partner_cache: int = 64,
    ) -> None:
        if binding not in _BINDINGS:
            raise ValueError(f"binding must be one of {_BINDINGS}, got {binding!r}")
        p = 1.0
        base_min_area, base_min_vis = 0.0, 0.0
        if isinstance(compose_or_transforms, A.Compose):
            transforms = list(compose_or_transforms.transforms)
            p = float(compose_or_transforms.p)
            bbox_proc = compose_or_transforms.processors.get("bboxes")
            if bbox_proc is not None:
                base_min_area = float(bbox_proc.params.min_area)
                base_min_vis = float(bbox_proc.params.min_visibility)
            compose_or_transforms.telemetry = False
            if seed is None and getattr(compose_or_transforms, "seed", None) is not None:
                seed = int(compose_or_transforms.seed)
        elif isinstance(compose_or_transforms, A.BasicTransform):
            transforms = [compose_or_transforms]
        else:
            transforms = list(compose_or_transforms)
        self.transforms = transforms
        self.binding = binding
        self.boxes_follow_masks = boxes_follow_masks
        self.min_area = base_min_area if min_area is None else float(min_area)
        self.min_visibility = base_min_vis if min_visibility is None else float(min_visibility)
        self.flip_pairs = None if flip_pairs is None else [(int(a), int(b)) for a, b in flip_pairs]
        self.seed = seed
        self.p = p
        self.pool = pool
        self.pool_name = pool_name
        self.stage = stage
        self.paste_donors = paste_donors
        self.compact = compact
        kinds = [_kind(t) for t in transforms]
        self.kinds = [k if compact or k in ("pixel", "mosaic", "paste") else "dense"
                      for k in kinds]
        self._mosaic = [t for t, k in zip(transforms, self.kinds) if k == "mosaic"]
        self._has_paste = "paste" in self.kinds
        if mosaic_partners is None:
            cells = [int(np.prod(getattr(t, "grid_yx", (2, 2)))) for t in self._mosaic]
            mosaic_partners = max(cells, default=1) - 1
        self.mosaic_partners = int(mosaic_partners)
        self._composes: dict[tuple[int, str], Any] = {}
        self._rng = np.random.default_rng(seed)
        self.partner_cache = int(partner_cache)
        self._partners: OrderedDict[int, Sample] = OrderedDict()
        self._decoded: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._row_cache: OrderedDict[int, tuple[Sample, bool, list[_Row]]] = OrderedDict()

    # mixing ---------------------------------------------------------------------------------

    @property
    def needs_pool(self) -> bool:
        return bool(self._mosaic) or self._has_paste

    @property
    def dense_transforms(self) -> list[str]:
        """Names of the transforms that run densely (masks as ``(N, H, W)``) in this pipeline."""
        return [type(t).__name__ for t, k in zip(self.transforms, self.kinds) if k == "dense"]

    def with_pool(self, pool: Sequence[Sample], name: str | None = None) -> Augment:
        """A copy drawing Mosaic neighbours and CopyAndPaste donors from ``pool``."""
        bound = copy.copy(self)
        bound.pool = pool
        bound.pool_name = name or getattr(pool, "name", None) or str(
            getattr(pool, "annotation_file", None) or self.pool_name
        )
        bound._composes = {}
        bound._partners = OrderedDict()
        bound._decoded = OrderedDict()
        bound._row_cache = OrderedDict()
        bound._rng = np.random.default_rng(self.seed)
        return bound

    def _partner(self, rng: np.random.Generator) -> Sample:
        """A random pool sample with its image decoded (kept in a small LRU cache)."""
        assert self.pool is not None
        index = int(rng.integers(len(self.pool)))
        cached = self._partners.get(index)
        if cached is not None:
            self._partners.move_to_end(index)
            return cached
        partner = self.pool[index]
        if self.partner_cache > 0:
            partner = Sample.from_array(self._image(partner), partner.instances,
                                        partner.image_id, partner.meta)
            self._partners[index] = partner
            while len(self._partners) > self.partner_cache:
                self._partners.popitem(last=False)
        return partner

    def _partner_rows(self, partner: Sample, source: int, use_masks: bool) -> list[_Row]:
        """``_rows`` of a pool sample, prepared once while it stays in the partner cache (its
        RLE and bitmap masks are cut to tight crops once, not at every draw)."""
        key = id(partner)
        cached = self._row_cache.get(key)
        if cached is None or cached[0] is not partner or cached[1] != use_masks:
            cached = (partner, use_masks, self._rows(partner, -1, use_masks, None))
            if self.partner_cache > 0 and any(p is partner for p in self._partners.values()):
                self._row_cache[key] = cached
                while len(self._row_cache) > self.partner_cache:
                    self._row_cache.popitem(last=False)
        return [_Row(source, r.local, r.item, r.box.copy(),
                     None if r.keypoints is None else r.keypoints.copy())
                for r in cached[2]]

    def _image(self, sample: Sample) -> np.ndarray:
        """A sample's image; a file decoded recently for the pool is not decoded again."""
        if self.partner_cache > 0 and sample.image_path is not None and not sample.image_loaded:
            key = ("file", sample.image_path)
            image = self._decoded.get(key)
            if image is None:
                image = sample.image
                self._decoded[key] = image
                while len(self._decoded) > self.partner_cache:
                    self._decoded.popitem(last=False)
            else:
                self._decoded.move_to_end(key)
            return image
        return sample.image

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        dense = self.dense_transforms
        tail = f", dense=[{', '.join(dense)}]" if dense else ""
        return (f"Augment([{names}], binding={self.binding!r}, "
                f"pool={'yes' if self.pool else 'no'}{tail})")

    def __getstate__(self) -> dict[str, Any]:
        # Composes are rebuilt on first use (a DataLoader worker gets the recipe only).
        state = self.__dict__.copy()
        state["_composes"] = {}
        state["_partners"] = OrderedDict()
        state["_decoded"] = OrderedDict()
        state["_row_cache"] = OrderedDict()
        return state

    # composes --------------------------------------------------------------------------------

    def _compose(self, index: int, mode: str) -> Any:
        """The Compose running transform ``index`` in ``mode`` (``image``, ``applied``: the
        image and whether the transform applied, ``points``, ``boxes`` or ``dense``), built
        once."""
        key = (index, mode)
        if key not in self._composes:
            kwargs: dict[str, Any] = {"p": 1.0, "telemetry": False, "seed": self.seed}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                if mode in ("points", "boxes", "dense"):
                    kwargs["keypoint_params"] = A.KeypointParams(
                        coord_format="xy", remove_invisible=False)
                if mode in ("boxes", "dense"):
                    kwargs["bbox_params"] = A.BboxParams(
                        coord_format="pascal_voc", min_visibility=0.0, min_area=0.0,
                        clip_bboxes_on_input=True, filter_invalid_bboxes=False)
                if mode in ("dense", "applied"):
                    kwargs["save_applied_params"] = True
                self._composes[key] = A.Compose([self.transforms[index]], **kwargs)
        return self._composes[key]

    # the call -------------------------------------------------------------------------------

    def __call__(self, sample: Sample, *, seed: int | None = None) -> Sample:
        inst = sample.instances
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        use_masks = inst.masks is not None and self.binding != "keypoints"
        drops: list[Drop] = []
        image = self._image(sample) if self.needs_pool else sample.image
        state = _State(_contiguous(image), [], [sample])
        state.rows = self._rows(sample, 0, use_masks, drops)
        unit_seeds = rng.integers(0, 2**31 - 1, size=len(self.transforms))
        applied = rng.random() < self.p
        if applied:
            for index, kind in enumerate(self.kinds):
                unit_seed = int(unit_seeds[index])
                if kind == "pixel":
                    out = self._compose(index, "image")(image=state.image,
                                                        invocation_seed=unit_seed)
                    state.image = _contiguous(out["image"])
                elif kind == "projective":
                    self._projective(index, state, unit_seed)
                elif kind == "dense":
                    self._dense(index, state, unit_seed)
                elif kind == "mosaic":
                    self._mosaic_unit(self.transforms[index], state, rng, use_masks)
                elif kind == "paste":
                    self._paste_unit(self.transforms[index], state, rng)
        return self._assemble(sample, state, use_masks, drops)

    def _rows(self, sample: Sample, source: int, use_masks: bool,
              drops: list[Drop] | None) -> list[_Row]:
        """The rows of ``sample`` that can travel: masks as polygons or tight bitmaps; rows with
        an empty mask (or a degenerate box) are dropped on input (recorded for the sample)."""
        inst = sample.instances
        n = len(inst)
        if n == 0:
            return []
        h, w = inst.image_size
        kps = inst.keypoints if inst.keypoints is not None and inst.keypoints.shape[1] else None
        rows: list[_Row] = []
        items: list[MaskItem | None] = [None] * n
        boxes = inst.boxes.astype(np.float64)
        bad = np.zeros(n, bool)
        if use_masks:
            assert inst.masks is not None
            masks = inst.masks
            convert = [i for i, it in enumerate(masks.items) if not isinstance(it, PolygonMask)]
            crops = masks[convert].to_bitmaps().items if convert else ()
            items = list(masks.items)
            for i, crop in zip(convert, crops):
                items[i] = crop
            for i, item in enumerate(items):
                if isinstance(item, BitmapMask):
                    bad[i] = item.bitmap.size == 0 or not item.bitmap.any()
            reason = "empty_mask"
        else:
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            bad = (boxes[:, 2] - boxes[:, 0] <= 0) | (boxes[:, 3] - boxes[:, 1] <= 0)
            reason = "degenerate_box"
        for i in range(n):
            if bad[i]:
                if drops is not None:
                    drops.append(Drop(int(inst.ids[i]), reason, int(inst.labels[i]), self.stage,
                                      "on input, before augmentation"))
                continue
            rows.append(_Row(source, i, items[i], boxes[i].copy(),
                             None if kps is None else kps[i].astype(np.float32)))
        return rows

    # units -----------------------------------------------------------------------------------

    def _projective(self, index: int, state: _State, unit_seed: int) -> None:
        h, w = state.size
        transform = self.transforms[index]
        name = type(transform).__name__
        known = _KNOWN_MAPS.get(type(transform))
        if known is not None:
            # the map is known once albumentationsx says whether it applied (always, at p=1):
            # the image alone goes through it, no control points through its keypoint processing
            always = float(transform.p) >= 1
            out = self._compose(index, "image" if always else "applied")(
                image=state.image, invocation_seed=unit_seed)
            state.image = _contiguous(out["image"])
            if always or out["applied_transforms"]:
                mapped = known((h, w), state.size)
                if not mapped.is_identity:
                    self._move(state, mapped, name)
            return
        points = control_points((h, w))
        needs_boxes = any(type(leaf).__name__ in _NEEDS_BOXES
                          for leaf in _leaves(self.transforms[index]))
        data: dict[str, Any] = {"image": state.image, "keypoints": points}
        if needs_boxes:
            alive = state.alive()
            data["bboxes"] = (np.stack([_current_box(row, (h, w)) for row in alive])
                              if alive else np.zeros((0, 4), np.float32))
        out = self._compose(index, "boxes" if needs_boxes else "points")(
            **data, invocation_seed=unit_seed)
        image = _contiguous(out["image"])
        moved = _points(out["keypoints"])
        homography = (solve_homography(points, moved, image.shape[:2])
                      if len(moved) == len(points) and min(h, w) > 1 else None)
        if homography is None:  # not projective after all: the same draw, densely
            self._dense(index, state, unit_seed, why=f"{name} (its draw was not projective)")
            return
        state.image = image
        if homography.out_size == (h, w) and homography.is_identity:
            return  # not applied this time (its probability), or an identity draw
        self._move(state, homography, f"{name}")

    def _move(self, state: _State, homography: Homography, what: str,
              sampling: str = "opencv") -> None:
        """Map every live row; ``sampling``: ``opencv`` (where albumentationsx's masks land)
        or ``centre`` (exact; for instkit's own centre-aligned image resampling)."""
        size = homography.out_size
        alive = state.alive()
        polygon_rows = [row for row in alive if isinstance(row.item, PolygonMask)]
        moved = dict(zip(map(id, polygon_rows),
                         warp_polygons([row.item for row in polygon_rows],  # type: ignore[misc]
                                       homography, sampling)))
        for row in alive:
            if row.item is not None:
                item, extent = (moved[id(row)] if id(row) in moved
                                else warp_item(row.item, homography, sampling))
                if item is None:
                    row.dropped = ("cropped_out", f"{what} moved it out of the {size[0]}x"
                                                  f"{size[1]} frame")
                    continue
                row.item = item
            else:
                corners = np.array([[row.box[0], row.box[1]], [row.box[2], row.box[1]],
                                    [row.box[2], row.box[3]], [row.box[0], row.box[3]]])
                pts = map_points_edge(homography, corners)
                extent = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(),
                                   pts[:, 1].max()])
                row.box = np.array([max(extent[0], 0), max(extent[1], 0),
                                    min(extent[2], size[1]), min(extent[3], size[0])])
                if row.box[2] <= row.box[0] or row.box[3] <= row.box[1]:
                    row.dropped = ("cropped_out", f"{what} moved its box out of the frame")
                    continue
            if self.min_visibility > 0 and (
                    shown := visible_fraction(extent, size)) < self.min_visibility:
                row.dropped = ("below_min_visibility",
                               f"{what}: visible share of its box {shown:.3f} < "
                               f"min_visibility={self.min_visibility:g}")
                continue
            if row.keypoints is not None:
                row.keypoints = _move_keypoints(row.keypoints, homography, size)
            if homography.reflects:
                row.reflected = not row.reflected

    def _dense(self, index: int, state: _State, unit_seed: int, why: str | None = None) -> None:
        """Run transform ``index`` on dense ``(H, W, N)`` masks (its own draw, this unit only)."""
        h, w = state.size
        alive = state.alive()
        name = type(self.transforms[index]).__name__
        state.dense_units.append(why or name)
        with_masks = [row for row in alive if row.item is not None]
        data: dict[str, Any] = {"image": state.image}
        masks = Masks([row.item for row in with_masks], (h, w))  # type: ignore[misc]
        # OpenCV takes at most 128 channels here: more masks go through in groups, each with
        # the same seed (so the same draw) as the first
        groups = [list(range(start, min(start + _MASK_GROUP, len(with_masks))))
                  for start in range(0, len(with_masks), _MASK_GROUP)]
        if groups:
            data["mask"] = _planes(masks[np.asarray(groups[0])])
        kp_rows = [row for row in alive if row.keypoints is not None]
        flat = (np.concatenate([row.keypoints[:, :2] for row in kp_rows])  # type: ignore[index]
                if kp_rows else np.zeros((0, 2), np.float32))
        data["keypoints"] = np.clip(flat, -0.5, [w - 0.5, h - 0.5]) if len(flat) else flat
        data["bboxes"] = (np.stack([_current_box(row, (h, w)) for row in alive])
                          if alive else np.zeros((0, 4), np.float32))
        compose = self._compose(index, "dense")
        out = compose(**data, invocation_seed=unit_seed)
        state.image = _contiguous(out["image"])
        nh, nw = state.size
        reflected = _reflection_parity(out.get("applied_transforms", []))
        if with_masks:
            planes = [np.asarray(out["mask"]).reshape(nh, nw, -1)]
            for group in groups[1:]:
                again = compose(**{**data, "mask": _planes(masks[np.asarray(group)])},
                                invocation_seed=unit_seed)
                planes.append(np.asarray(again["mask"]).reshape(nh, nw, -1))
            for k, row in enumerate(with_masks):
                item = tight_bitmap(planes[k // _MASK_GROUP][:, :, k % _MASK_GROUP])
                if item.bitmap.size == 0:
                    row.dropped = ("cropped_out", f"{name} left it no pixels in the frame")
                else:
                    row.item = item
        for row, box in zip(alive, np.asarray(out["bboxes"]).reshape(-1, 4)):
            if row.item is None:
                row.box = box.astype(np.float64)
        moved = _points(out["keypoints"])
        start = 0
        for row in kp_rows:
            assert row.keypoints is not None
            k = row.keypoints.shape[0]
            kp = row.keypoints.copy()
            kp[:, :2] = moved[start : start + k]
            start += k
            inside = ((kp[:, 0] >= 0) & (kp[:, 0] < nw) & (kp[:, 1] >= 0) & (kp[:, 1] < nh))
            kp[~inside, 2] = 0
            row.keypoints = kp
        if reflected:
            for row in alive:
                row.reflected = not row.reflected

    # Mosaic ------------------------------------------------------------------------------------

    def _mosaic_unit(self, transform: Any, state: _State, rng: np.random.Generator,
                     use_masks: bool) -> None:
        """albumentationsx's Mosaic geometry on compact rows: a crop window of ``target_size``
        centred in the valid zone of a ``grid_yx`` grid of ``cell_shape`` cells; the primary
        takes the largest visible cell part, partners the others; each item is fitted to its
        cell (``cover``: scaled to cover it; ``contain``: scaled to fit and centred) and the
        part of the cell next to the window's centre is shown."""
        if rng.random() >= float(transform.p):
            return
        rows_n, cols_n = (int(v) for v in transform.grid_yx)
        cell_h, cell_w = (int(v) for v in transform.cell_shape)
        target_h, target_w = (int(v) for v in transform.target_size)
        low, high = (float(v) for v in transform.center_range)
        grid_h, grid_w = rows_n * cell_h, cols_n * cell_w
        min_cx, max_cx = target_w // 2, grid_w - (target_w + 1) // 2
        min_cy, max_cy = target_h // 2, grid_h - (target_h + 1) // 2
        cx = min(max(min_cx + int((max_cx - min_cx + 1) * rng.uniform(low, high)), min_cx),
                 max_cx)
        cy = min(max(min_cy + int((max_cy - min_cy + 1) * rng.uniform(low, high)), min_cy),
                 max_cy)
        x_min, y_min = cx - target_w // 2, cy - target_h // 2
        xs = np.unique(np.clip(np.arange(cols_n + 1) * cell_w, x_min, x_min + target_w)) - x_min
        ys = np.unique(np.clip(np.arange(rows_n + 1) * cell_h, y_min, y_min + target_h)) - y_min
        placements = [(int(xs[i]), int(ys[j]), int(xs[i + 1]), int(ys[j + 1]))
                      for j in range(len(ys) - 1) for i in range(len(xs) - 1)]
        primary = max(placements, key=lambda c: (c[2] - c[0]) * (c[3] - c[1]))
        others = [c for c in placements if c != primary]
        rng.shuffle(others)
        # partners: from the pool, else the sample itself again
        items: list[tuple[np.ndarray, list[_Row]]] = [(state.image, state.alive())]
        for _ in range(len(others)):
            if self.pool is not None and len(self.pool) > 0:
                partner = self._partner(rng)
                source = len(state.sources)
                state.sources.append(partner)
                rows = self._partner_rows(partner, source, use_masks)
                state.offered += len(rows)
                state.rows.extend(rows)
                items.append((np.ascontiguousarray(partner.image), rows))
            else:
                copies = [_Row(r.source, r.local, r.item, r.box.copy(),
                               None if r.keypoints is None else r.keypoints.copy(), r.reflected)
                          for r in state.alive()]
                state.rows.extend(copies)
                items.append((state.image, copies))
        canvas = np.empty((target_h, target_w, *state.image.shape[2:]), state.image.dtype)
        canvas[...] = np.asarray(transform.fill, dtype=canvas.dtype) if np.ndim(
            transform.fill) == 0 else np.asarray(transform.fill, dtype=canvas.dtype)
        interpolation = int(getattr(transform, "interpolation", cv2.INTER_LINEAR))
        for placement, (image, rows) in zip([primary, *others], items):
            x1, y1, x2, y2 = placement
            ph, pw = y2 - y1, x2 - x1
            position = _cell_position(placement, (target_h, target_w))
            ih, iw = image.shape[:2]
            if transform.fit_mode == "cover":
                scale = max(cell_h / ih, cell_w / iw)
            else:
                scale = min(cell_h / ih, cell_w / iw)
            rh, rw = max(1, round(ih * scale)), max(1, round(iw * scale))
            pad_y = max(0, (cell_h - rh) // 2) if transform.fit_mode == "contain" else 0
            pad_x = max(0, (cell_w - rw) // 2) if transform.fit_mode == "contain" else 0
            crop_x, crop_y = _opposite_crop((cell_h, cell_w), (ph, pw), position)
            # item -> resized -> padded cell -> crop of the cell -> placement on the canvas
            sx, sy = rw / iw, rh / ih
            tx, ty = pad_x - crop_x, pad_y - crop_y
            into_cell = Homography.scale_translate(sx, tx, sy, ty, (ph, pw))
            # Only the shown part of the item is resampled, straight into its placement (the
            # same centre-aligned bilinear sampling as resizing it whole, then cropping).
            if ph > 0 and pw > 0 and (rw, rh) == (iw, ih):  # native size: a copy
                src_x0, src_y0 = max(0, -tx), max(0, -ty)
                dst_x0, dst_y0 = max(0, tx), max(0, ty)
                cw_, ch_ = min(iw - src_x0, pw - dst_x0), min(ih - src_y0, ph - dst_y0)
                if cw_ > 0 and ch_ > 0:
                    canvas[y1 + dst_y0 : y1 + dst_y0 + ch_, x1 + dst_x0 : x1 + dst_x0 + cw_] = \
                        image[src_y0 : src_y0 + ch_, src_x0 : src_x0 + cw_]
            elif ph > 0 and pw > 0:
                cv2.warpAffine(image, into_cell.centre_matrix[:2], (pw, ph),
                               dst=canvas[y1:y2, x1:x2], flags=interpolation,
                               borderMode=cv2.BORDER_TRANSPARENT)
            self._place(rows, into_cell, (x1, y1), (target_h, target_w), "Mosaic")
        state.image = canvas
        state.owns_image = True

    def _place(self, rows: list[_Row], homography: Homography, offset: tuple[int, int],
               canvas: tuple[int, int], what: str) -> None:
        """Map rows into a placement frame, then shift the placement onto the canvas."""
        dx, dy = offset
        inner = [row for row in rows if row.dropped is None]
        probe = _State(np.empty((*homography.out_size, 0), np.uint8), inner, [])
        self._move(probe, homography, f"{what} (outside its cell)", sampling="centre")
        for row in inner:
            if row.dropped is not None:
                continue
            if row.item is not None:
                row.item = _translate(row.item, dx, dy)
            else:
                row.box = row.box + np.array([dx, dy, dx, dy], np.float64)
            if row.keypoints is not None:
                kp = row.keypoints.copy()
                kp[:, 0] += dx
                kp[:, 1] += dy
                row.keypoints = kp

    # CopyAndPaste ----------------------------------------------------------------------------

    def _paste_unit(self, transform: Any, state: _State, rng: np.random.Generator) -> None:
        """Simple Copy-Paste on compact rows: each donor object is tight-cropped to its mask,
        shrunk to fit the image (never enlarged), jittered by ``scale_range`` (capped at the
        fit), placed uniformly at random and stamped (``hard`` or ``gaussian`` blend). Pixels it
        covers leave the masks below; a row left with less than ``min_visibility_after_paste``
        of its pixels, or none, is dropped as ``occluded``; keypoints under it become
        invisible."""
        if rng.random() >= float(transform.p) or self.pool is None or len(self.pool) == 0:
            return
        low, high = self.paste_donors
        h, w = state.size
        for _ in range(int(rng.integers(low, high + 1))):
            donor = self._partner(rng)
            dinst = donor.instances
            if dinst.masks is None or len(dinst) == 0:
                continue
            solid = np.flatnonzero(~dinst.iscrowd)
            if len(solid) == 0:
                continue
            local = int(solid[int(rng.integers(len(solid)))])
            item = dinst.masks[local].items[0]
            crop = dinst.masks[local].to_bitmaps().items[0]
            assert isinstance(crop, BitmapMask)
            if crop.bitmap.size == 0:
                continue
            (oy, ox), (bh, bw) = crop.offset, crop.bitmap.shape
            fit = min(1.0, h / bh, w / bw)
            scale = fit * min(1.0, float(rng.uniform(*transform.scale_range)))
            ph, pw = max(1, round(bh * scale)), max(1, round(bw * scale))
            if ph * pw < int(getattr(transform, "min_paste_area", 1)):
                continue
            py, px = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            into = Homography.scale_translate(pw / bw, px - ox * pw / bw, ph / bh,
                                              py - oy * ph / bh, (h, w))
            moved, _ = warp_item(item if isinstance(item, PolygonMask) else crop, into,
                                 sampling="centre")
            if isinstance(moved, PolygonMask):  # the object covers its placement, no more
                moved = _clip_polygon(moved, (py, px, ph, pw))
            if moved is None:
                continue
            footprint = _within(Masks([moved], (h, w)).to_bitmaps().items[0], (py, px, ph, pw))
            if footprint.bitmap.size == 0:
                continue
            if isinstance(moved, BitmapMask):
                moved = footprint
            sigma = (float(rng.uniform(*transform.blend_sigma_range))
                     if transform.blend_mode == "gaussian" else 0.0)
            self._stamp(state, donor.image, crop, footprint, (py, px, ph, pw), sigma)
            self._occlude(state, footprint, transform)
            source = len(state.sources)
            state.sources.append(donor)
            kp = dinst.keypoints
            keypoints = None
            if kp is not None and kp.shape[1]:
                keypoints = kp[local].astype(np.float32)
                keypoints = _move_keypoints(keypoints, into, (h, w))
                # only the object's own pixels are pasted: a keypoint off them is not shown
                keypoints[~_on_bitmap(keypoints, footprint), 2] = 0
            state.rows.append(_Row(source, local, moved, np.zeros(4), keypoints))
            state.offered += 1

    @staticmethod
    def _stamp(state: _State, donor_image: np.ndarray, crop: BitmapMask, footprint: BitmapMask,
               placement: tuple[int, int, int, int], sigma: float) -> None:
        py, px, ph, pw = placement
        (oy, ox), (bh, bw) = crop.offset, crop.bitmap.shape
        piece = np.ascontiguousarray(donor_image[oy : oy + bh, ox : ox + bw])
        piece = cv2.resize(piece, (pw, ph), interpolation=cv2.INTER_LINEAR)
        fy, fx = footprint.offset
        fh, fw = footprint.bitmap.shape
        image = state.writable_image()
        region = image[py : py + ph, px : px + pw]
        if piece.shape != region.shape:  # a grey donor on a colour image
            piece = np.broadcast_to(piece.reshape(ph, pw, -1), region.shape)
        if sigma <= 0:  # hard: the object's pixels replace what lies below
            where = np.zeros((ph, pw), bool)
            where[fy - py : fy - py + fh, fx - px : fx - px + fw] = footprint.bitmap
            np.copyto(region, piece, where=where[:, :, None] if region.ndim == 3 else where)
            return
        hard = np.zeros((ph, pw), np.float32)
        hard[fy - py : fy - py + fh, fx - px : fx - px + fw] = footprint.bitmap
        alpha = np.ascontiguousarray(cv2.GaussianBlur(hard, (0, 0), sigma))
        region[...] = cv2.blendLinear(np.ascontiguousarray(piece), np.ascontiguousarray(region),
                                      alpha, 1.0 - alpha)

    def _occlude(self, state: _State, footprint: BitmapMask, transform: Any) -> None:
        (fy, fx), (fh, fw) = footprint.offset, footprint.bitmap.shape
        threshold = float(transform.min_visibility_after_paste)
        for row in state.alive():
            if row.keypoints is not None:
                covered = _on_bitmap(row.keypoints, footprint) & (row.keypoints[:, 2] > 0)
                if covered.any():
                    kp = row.keypoints.copy()
                    kp[covered, 2] = 0
                    row.keypoints = kp
            if row.item is None:
                continue
            box = _item_box(row.item)
            if box[2] <= fx or box[0] >= fx + fw or box[3] <= fy or box[1] >= fy + fh:
                continue
            bitmap = row.item if isinstance(row.item, BitmapMask) else \
                Masks([row.item], state.size).to_bitmaps().items[0]
            assert isinstance(bitmap, BitmapMask)
            (by, bx), (bh, bw) = bitmap.offset, bitmap.bitmap.shape
            before = int(np.count_nonzero(bitmap.bitmap))
            y0, y1 = max(by, fy), min(by + bh, fy + fh)
            x0, x1 = max(bx, fx), min(bx + bw, fx + fw)
            if y1 <= y0 or x1 <= x0:
                continue
            cut = footprint.bitmap[y0 - fy : y1 - fy, x0 - fx : x1 - fx]
            if not cut[bitmap.bitmap[y0 - by : y1 - by, x0 - bx : x1 - bx]].any():
                continue
            remaining = bitmap.bitmap.copy()
            remaining[y0 - by : y1 - by, x0 - bx : x1 - bx] &= ~cut
            after = int(np.count_nonzero(remaining))
            if after == 0:
                row.dropped = ("occluded", "a pasted object covers all of it")
                continue
            if after < threshold * before:
                row.dropped = ("occluded", f"a pasted object covers {1 - after / before:.0%} of "
                                           f"it; min_visibility_after_paste={threshold:g}")
                continue
            row.item = tight_bitmap(remaining, (by, bx))

    # assembling -----------------------------------------------------------------------------

    def _assemble(self, sample: Sample, state: _State, use_masks: bool,
                  drops: list[Drop]) -> Sample:
        inst = sample.instances
        size = state.size
        k = inst.keypoints.shape[1] if inst.keypoints is not None else 0
        kept = state.alive()
        areas = np.zeros(len(kept), np.int64)
        masks: Masks | None = None
        if use_masks:
            masks = Masks([row.item for row in kept], size)  # type: ignore[misc]
            areas = masks.area() if len(kept) else areas
        final: list[_Row] = []
        final_index: list[int] = []
        for j, row in enumerate(kept):
            reason, detail = "", ""
            if use_masks and areas[j] == 0:
                reason, detail = "empty_mask", "the mask has no pixels after augmentation"
            elif use_masks and areas[j] < self.min_area:
                reason, detail = ("below_min_area",
                                  f"mask area {int(areas[j])} px < min_area={self.min_area:g}")
            elif not use_masks:
                bw, bh = row.box[2] - row.box[0], row.box[3] - row.box[1]
                if bw * bh < self.min_area:
                    reason, detail = ("below_min_area",
                                      f"box area {bw * bh:.1f} < min_area={self.min_area:g}")
            if reason:
                row.dropped = (reason, detail)
                continue
            final.append(row)
            final_index.append(j)
        # a Mosaic without a pool tiles the sample with itself: a row is lost only when no
        # copy of it survived, and it is recorded once
        kept_rows = {(row.source, row.local) for row in final}
        recorded = {d.annotation_id for d in drops}
        for row in state.rows:
            ident = int(inst.ids[row.local]) if row.source == 0 else None
            if (row.dropped is None or ident is None or ident in recorded
                    or (row.source, row.local) in kept_rows):
                continue
            reason, detail = row.dropped
            drops.append(Drop(ident, reason, int(inst.labels[row.local]), self.stage, detail))
            recorded.add(ident)
        if masks is not None:
            masks = masks[np.asarray(final_index, np.int64)] if final_index else Masks.empty(size)
            boxes = masks.boxes() if len(final) else np.zeros((0, 4), np.float32)
        else:
            boxes = (np.stack([row.box for row in final]).astype(np.float32) if final
                     else np.zeros((0, 4), np.float32))
        pairs = self._pairs(sample, k) if k else {}
        keypoints = None
        if k:
            keypoints = np.zeros((len(final), k, 3), np.float32)
            for j, row in enumerate(final):
                src_inst = state.sources[row.source].instances
                if row.keypoints is None or row.keypoints.shape[0] != k:
                    continue  # mixed in from a sample without these keypoints: not labelled
                kp = row.keypoints.copy()
                if row.reflected:
                    label = int(src_inst.labels[row.local])
                    for a, b in pairs.get(-1, pairs.get(label, [])):
                        kp[[a, b]] = kp[[b, a]]
                keypoints[j] = kp
        new = self._columns(state, final, size, masks, boxes, keypoints, k)
        meta = sample.meta.copy()
        meta.drops.extend(drops)
        if self.needs_pool:
            mixed = sum(1 for row in final if row.source != 0)
            meta.extra["mixed_in"] = {"offered": state.offered, "kept": mixed}
        if state.dense_units:
            meta.extra["dense_transforms"] = list(state.dense_units)
        if not use_masks and inst.masks is not None:
            meta.notes.append(f"{self.stage}: masks not carried (binding={self.binding!r})")
        return Sample.from_array(state.image, new, sample.image_id, meta)

    def _pairs(self, sample: Sample, k: int) -> dict[int, list[tuple[int, int]]]:
        """Flip pairs per label (key -1: the same pairs for every label)."""
        if self.flip_pairs is not None:
            return {-1: self.flip_pairs}
        table = sample.meta.categories
        if table is None:
            return {}
        return {label: [(a, b) for a, b in table.flip_pairs(label) if a < k and b < k]
                for label in range(len(table))}

    def _columns(
        self, state: _State, kept: list[_Row], size: tuple[int, int], masks: Masks | None,
        boxes: np.ndarray, keypoints: np.ndarray | None, k: int,
    ) -> Instances:
        primary = state.sources[0].instances
        n = len(kept)
        labels = np.zeros(n, np.int64)
        crowd = np.zeros(n, bool)
        ids = np.zeros(n, np.int64)
        scores = None if primary.scores is None else np.zeros(n, np.float32)
        extra_names = [name for name in primary.extras if name not in _GEOMETRY_EXTRAS]
        extras: dict[str, list[Any]] = {name: [] for name in extra_names}
        if self.needs_pool:
            for name in _SOURCE_EXTRAS:
                extras.setdefault(name, [])
        used = {int(i) for i in primary.ids}
        next_id = max(used, default=0) + 1
        seen: set[int] = set()
        for j, row in enumerate(kept):
            src = state.sources[row.source]
            si = src.instances
            labels[j] = si.labels[row.local]
            crowd[j] = si.iscrowd[row.local]
            if row.source == 0 and row.local not in seen:
                ids[j] = si.ids[row.local]
                seen.add(row.local)
            else:
                while next_id in used:
                    next_id += 1
                ids[j] = next_id
                used.add(next_id)
            if scores is not None:
                scores[j] = si.scores[row.local] if si.scores is not None else np.nan
            for name in extra_names:
                column_values = si.extras.get(name)
                extras[name].append(None if column_values is None
                                    else column_values[row.local])
            if self.needs_pool:
                extras["source_dataset"].append(
                    str(src.meta.source or "") if row.source == 0 else self.pool_name)
                extras["source_image_id"].append(int(src.image_id))
                extras["source_annotation_id"].append(int(si.ids[row.local]))
        extra_arrays: dict[str, Any] = {}
        for name, values in extras.items():
            base = primary.extras.get(name)
            if base is not None and base.dtype != object and all(v is not None for v in values):
                extra_arrays[name] = (np.stack(values).astype(base.dtype) if values
                                      else np.zeros((0, *base.shape[1:]), base.dtype))
            elif name in ("source_image_id", "source_annotation_id"):
                extra_arrays[name] = np.asarray(values, np.int64).reshape(-1)
            else:
                column = np.empty(n, dtype=object)
                for j, value in enumerate(values):
                    column[j] = value
                extra_arrays[name] = column
        try:
            return Instances(
                image_size=size,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=labels,
                masks=masks,
                keypoints=None if not k else keypoints,
                iscrowd=crowd,
                ids=ids,
                scores=scores,
                extras=extra_arrays,
            )
        except InstancesError as exc:  # pragma: no cover - a bug here, not in user data
            raise InstancesError(f"augmented instances are inconsistent: {exc.message}",
                                 Location(image_id=state.sources[0].image_id)) from None


# --- helpers ------------------------------------------------------------------------------------


_MASK_GROUP = 128  # OpenCV's channel limit (CV_CN_MAX) in the builds instkit runs on


def _planes(masks: Masks) -> np.ndarray:
    """``(H, W, N)`` uint8 planes of a mask column (the dense path's input)."""
    return np.ascontiguousarray(np.moveaxis(masks.to_dense(), 0, 2).view(np.uint8))


def _contiguous(image: Any) -> np.ndarray:
    """A C-contiguous image. A flipped view (what albumentationsx's flips return) is copied
    with ``cv2.flip`` from its base, several times faster than numpy's strided copy."""
    array = np.asarray(image)
    if array.flags.c_contiguous:
        return array
    if array.ndim >= 2 and array.strides[1] < 0 and array[:, ::-1].flags.c_contiguous:
        return np.asarray(cv2.flip(array[:, ::-1], 1)).reshape(array.shape)
    if array.strides[0] < 0 and array[::-1].flags.c_contiguous:
        return np.asarray(cv2.flip(array[::-1], 0)).reshape(array.shape)
    return np.ascontiguousarray(array)


def _points(keypoints: Any) -> np.ndarray:
    """albumentationsx's keypoints output as ``(P, 2)`` float64 x, y."""
    array = np.asarray(keypoints, np.float64)
    return array.reshape(len(array), -1)[:, :2] if len(array) else np.zeros((0, 2))


def _on_bitmap(keypoints: np.ndarray, item: BitmapMask) -> np.ndarray:
    """``(K,)`` bool: the pixel under each pixel-centre keypoint is set in the bitmap."""
    (y0, x0), (bh, bw) = item.offset, item.bitmap.shape
    xi = np.floor(keypoints[:, 0] + 0.5).astype(np.int64) - x0
    yi = np.floor(keypoints[:, 1] + 0.5).astype(np.int64) - y0
    inside = (xi >= 0) & (xi < bw) & (yi >= 0) & (yi < bh)
    out = np.zeros(len(keypoints), bool)
    out[inside] = item.bitmap[yi[inside], xi[inside]]
    return out


def _clip_polygon(item: PolygonMask, window: tuple[int, int, int, int]) -> PolygonMask | None:
    """The part of a polygon inside the window ``(y, x, h, w)``."""
    wy, wx, wh, ww = window
    parts = []
    for part in item.parts:
        local = part.reshape(-1, 2) - (wx, wy)
        clipped = clip_part(local, float(ww), float(wh))
        if len(clipped) >= 3:
            parts.append(np.ascontiguousarray((clipped + (wx, wy)).reshape(-1)))
    return PolygonMask._trusted(tuple(parts)) if parts else None


def _within(item: MaskItem, window: tuple[int, int, int, int]) -> BitmapMask:
    """The part of a bitmap inside the window ``(y, x, h, w)``, tight."""
    assert isinstance(item, BitmapMask)
    wy, wx, wh, ww = window
    (by, bx), (bh, bw) = item.offset, item.bitmap.shape
    y0, y1 = max(by, wy), min(by + bh, wy + wh)
    x0, x1 = max(bx, wx), min(bx + bw, wx + ww)
    if y1 <= y0 or x1 <= x0:
        return BitmapMask(np.zeros((0, 0), bool), (0, 0))
    return tight_bitmap(item.bitmap[y0 - by : y1 - by, x0 - bx : x1 - bx], (y0, x0))


def _move_keypoints(keypoints: np.ndarray, homography: Homography,
                    size: tuple[int, int]) -> np.ndarray:
    kp = keypoints.copy()
    kp[:, :2] = map_points_centre(homography, kp[:, :2].astype(np.float64))
    h, w = size
    inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
    kp[~inside, 2] = 0
    return kp


def _item_box(item: MaskItem) -> np.ndarray:
    """``xyxy`` extent of a polygon's vertices, or a tight bitmap's box."""
    if isinstance(item, BitmapMask):
        (y0, x0), (bh, bw) = item.offset, item.bitmap.shape
        return np.array([x0, y0, x0 + bw, y0 + bh], np.float64)
    assert isinstance(item, PolygonMask)
    points = np.concatenate(item.parts).reshape(-1, 2)
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(),
                     points[:, 1].max()])


def _current_box(row: _Row, size: tuple[int, int]) -> np.ndarray:
    """The row's box clipped to the frame, at least a pixel wide and high (albumentationsx
    refuses boxes without area; these only steer box-dependent crops)."""
    h, w = size
    box = _item_box(row.item) if row.item is not None else row.box
    x0, y0 = min(max(box[0], 0), max(w - 1, 0)), min(max(box[1], 0), max(h - 1, 0))
    x1, y1 = min(max(box[2], x0 + 1), w), min(max(box[3], y0 + 1), h)
    return np.array([x0, y0, x1, y1], np.float32)


def _translate(item: MaskItem, dx: int, dy: int) -> MaskItem:
    if isinstance(item, BitmapMask):
        return BitmapMask(item.bitmap, (item.offset[0] + dy, item.offset[1] + dx))
    assert isinstance(item, PolygonMask)
    parts = []
    for part in item.parts:
        moved = part.copy()
        moved[0::2] += dx
        moved[1::2] += dy
        parts.append(moved)
    return PolygonMask._trusted(tuple(parts))


def _cell_position(placement: tuple[int, int, int, int], target: tuple[int, int]) -> str:
    """Where a placement lies relative to the canvas centre (as albumentationsx's Mosaic)."""
    th, tw = target
    x1, y1, x2, y2 = placement
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    vertical = "top" if cy < th / 2.0 else "bottom" if cy > th / 2.0 else "center"
    horizontal = "left" if cx < tw / 2.0 else "right" if cx > tw / 2.0 else "center"
    if vertical == "center" or horizontal == "center":
        return "center"
    return f"{vertical}_{horizontal}"


def _opposite_crop(cell: tuple[int, int], crop: tuple[int, int], position: str
                   ) -> tuple[int, int]:
    """Top-left ``(x, y)`` of a ``crop`` in a ``cell`` at the corner opposite ``position``."""
    cell_h, cell_w = cell
    crop_h, crop_w = crop
    if position == "top_left":
        return cell_w - crop_w, cell_h - crop_h
    if position == "top_right":
        return 0, cell_h - crop_h
    if position == "bottom_left":
        return cell_w - crop_w, 0
    if position == "bottom_right":
        return 0, 0
    return (cell_w - crop_w) // 2, (cell_h - crop_h) // 2


_REFLECTIONS = {"HorizontalFlip", "VerticalFlip", "Transpose"}


def _reflection_parity(applied: Sequence[tuple[str, dict[str, Any]]]) -> int:
    count = 0
    for name, params in applied:
        short = name.rsplit(".", 1)[-1]
        if short in _REFLECTIONS:
            count += 1
        elif short in ("D4", "SquareSymmetry"):
            if str(params.get("group_element", "")) in ("v", "hvt", "h", "t"):
                count += 1
    return count % 2


__all__ = ["PROJECTIVE", "SUPPORTED_ALBUMENTATIONSX", "Augment"]
