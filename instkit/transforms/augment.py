"""``Augment``: an albumentationsx pipeline that takes a ``Sample`` and returns a ``Sample``.

Every instance is one row through the pipeline: its mask, box and keypoints are bound with
``Compose(instance_binding=...)`` and a hidden ``_row`` label carries the row's index, so labels,
crowd flags, ids, scores and extras are re-attached from the source afterwards, never re-ordered.
After the pipeline:

- boxes are the masks' tight boxes (``boxes_follow_masks=True``), masks are box-tight bitmaps;
- an instance whose mask is empty, whose mask area (pixels) is under ``min_area``, or whose box
  albumentationsx removed (cropped out, or under ``min_visibility``: the visible fraction of its
  box, as albumentationsx defines it) is dropped whole and recorded in ``sample.meta.drops``;
- keypoints that leave the image keep their coordinates and get visibility 0; after an odd number
  of reflections (HorizontalFlip, VerticalFlip, Transpose, D4/SquareSymmetry reflections) the
  left/right keypoint pairs are swapped;
- the ``coco_bbox`` / ``coco_area`` extras (they describe the source file) are removed.

Mixing transforms (``A.Mosaic``, ``A.CopyAndPaste``) draw their partners from a pool bound with
``with_pool``; instances mixed in get fresh ids unique in the sample and their source in the
extras ``source_dataset`` / ``source_image_id`` / ``source_annotation_id``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from instkit.errors import InstancesError, Location
from instkit.instances import Instances
from instkit.masks import BitmapMask, Masks, tight_bitmap
from instkit.sample import Drop, Sample
from instkit.transforms._albu import A, Perspective

_ROW = "_row"
_KP = "_k"
_SOURCE_EXTRAS = ("source_dataset", "source_image_id", "source_annotation_id")
_GEOMETRY_EXTRAS = ("coco_bbox", "coco_area")
_REFLECTIONS = {"HorizontalFlip", "VerticalFlip", "Transpose"}
_BINDINGS = ("masks", "mask", "keypoints")


@dataclass(frozen=True)
class _Source:
    sample: Sample
    rows: np.ndarray  # rows of sample.instances offered to the pipeline
    boxes: np.ndarray  # (len(rows), 4) float32 xyxy of those rows (masks' tight boxes)
    first: int  # global row number of rows[0]
    primary: bool


def _walk(transforms: Sequence[Any]) -> list[Any]:
    out = []
    for transform in transforms:
        out.append(transform)
        inner = getattr(transform, "transforms", None)
        if isinstance(inner, (list, tuple)):
            out.extend(_walk(inner))
    return out


def _reflection_parity(applied: Sequence[tuple[str, dict[str, Any]]]) -> int:
    count = 0
    for name, params in applied:
        short = name.rsplit(".", 1)[-1]
        if short in _REFLECTIONS:
            count += 1
        elif short in ("D4", "SquareSymmetry"):
            group = str(params.get("group_element", ""))
            if group in ("v", "hvt", "h", "t"):
                count += 1
    return count % 2


class Augment:
    """Wrap an albumentationsx ``Compose`` (or a list of its transforms) for ``Sample`` s.

    Args:
        compose_or_transforms: an ``A.Compose`` (its transforms, probability and bbox filter
            settings are used; instkit rebuilds it with its own binding and telemetry off) or a
            list of albumentationsx transforms.
        binding: ``"masks"`` (per-instance ``(N, H, W)``), ``"mask"`` (one ``(H, W, N)`` mask) or
            ``"keypoints"`` (boxes + keypoints; masks are not carried). Samples without masks
            always use boxes (+ keypoints).
        boxes_follow_masks: boxes become their masks' tight boxes (else albumentationsx's boxes).
        min_area: minimum mask area in pixels (box area when there are no masks).
        min_visibility: minimum visible box fraction (albumentationsx's bbox filter).
        flip_pairs: keypoint index pairs swapped on reflections; default from the sample's
            category table (left/right names).
        seed: seeds albumentationsx and the partner draws when calls give no ``seed``.
        pool: partners of the mixing transforms (see ``with_pool``).
        mosaic_partners / paste_donors: how many pool samples to offer Mosaic, and the range of
            donor instances offered to CopyAndPaste.
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
    ) -> None:
        if binding not in _BINDINGS:
            raise ValueError(f"binding must be one of {_BINDINGS}, got {binding!r}")
        p = 1.0
        mask_interpolation = None
        base_min_area, base_min_vis = 0.0, 0.0
        if isinstance(compose_or_transforms, A.Compose):
            transforms = list(compose_or_transforms.transforms)
            p = float(compose_or_transforms.p)
            mask_interpolation = getattr(compose_or_transforms, "mask_interpolation", None)
            bbox_proc = compose_or_transforms.processors.get("bboxes")
            if bbox_proc is not None:
                base_min_area = float(bbox_proc.params.min_area)
                base_min_vis = float(bbox_proc.params.min_visibility)
            compose_or_transforms.telemetry = False
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
        self.mask_interpolation = mask_interpolation
        self.pool = pool
        self.pool_name = pool_name
        self.stage = stage
        self.paste_donors = paste_donors
        names = {type(t).__name__ for t in _walk(transforms)}
        self._mosaic = [t for t in _walk(transforms) if type(t).__name__ == "Mosaic"]
        self._has_paste = "CopyAndPaste" in names
        if mosaic_partners is None:
            cells = [int(np.prod(getattr(t, "grid_yx", (2, 2)))) for t in self._mosaic]
            mosaic_partners = max(cells, default=1) - 1
        self.mosaic_partners = int(mosaic_partners)
        self._composes: dict[tuple[str | None, bool], Any] = {}
        self._logs: dict[tuple[str | None, bool], _RemovalLog | None] = {}
        self._rng = np.random.default_rng(seed)

    # mixing ---------------------------------------------------------------------------------

    @property
    def needs_pool(self) -> bool:
        return bool(self._mosaic) or self._has_paste

    def with_pool(self, pool: Sequence[Sample], name: str | None = None) -> Augment:
        """A copy drawing Mosaic neighbours and CopyAndPaste donors from ``pool``."""
        bound = copy.copy(self)
        bound.pool = pool
        bound.pool_name = name or getattr(pool, "name", None) or str(
            getattr(pool, "annotation_file", None) or self.pool_name
        )
        bound._composes = {}
        bound._logs = {}
        bound._rng = np.random.default_rng(self.seed)
        return bound

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Augment([{names}], binding={self.binding!r}, pool={'yes' if self.pool else 'no'})"

    # building -------------------------------------------------------------------------------

    def _compose(self, mask_binding: str | None, keypoints: bool) -> Any:
        key = (mask_binding, keypoints)
        if key not in self._composes:
            binding = ([mask_binding] if mask_binding else []) + ["bboxes"]
            if keypoints:
                binding.append("keypoints")
            bbox_params = A.BboxParams(
                coord_format="pascal_voc", label_fields=[_ROW], min_area=0.0,
                min_visibility=self.min_visibility, clip_bboxes_on_input=True,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # label_mapping not wanted for _k
                kp_params = (A.KeypointParams(coord_format="xy", label_fields=[_KP])
                             if keypoints else None)
                compose = A.Compose(
                    _mask_safe(copy.deepcopy(self.transforms)),
                    bbox_params=bbox_params,
                    keypoint_params=kp_params,
                    instance_binding=binding if len(binding) >= 2 else None,
                    p=self.p,
                    mask_interpolation=self.mask_interpolation,
                    seed=self.seed,
                    save_applied_params=keypoints,  # read for the keypoint flip parity only
                    telemetry=False,
                )
                self._logs[key] = _RemovalLog.attach(compose)
                self._composes[key] = compose
        return self._composes[key]

    def __getstate__(self) -> dict[str, Any]:
        # Composes are rebuilt on first use (a DataLoader worker gets the recipe, not the
        # instrumented processors).
        state = self.__dict__.copy()
        state["_composes"], state["_logs"] = {}, {}
        return state

    # the call -------------------------------------------------------------------------------

    def __call__(self, sample: Sample, *, seed: int | None = None) -> Sample:
        inst = sample.instances
        image = sample.image
        use_masks = inst.masks is not None and self.binding != "keypoints"
        use_kp = inst.keypoints is not None and inst.keypoints.shape[1] > 0
        drops: list[Drop] = []
        primary_rows, primary_boxes = self._usable_rows(sample, use_masks, drops)
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        invocation_seed = None if seed is None else int(rng.integers(0, 2**31 - 1))

        sources = [_Source(sample, primary_rows, primary_boxes, 0, True)]
        next_row = len(primary_rows)
        mosaic_meta: list[dict[str, Any]] = []
        paste_meta: list[dict[str, Any]] = []
        if self.needs_pool and self.pool is not None and len(self.pool) > 0:
            if self._mosaic:
                for _ in range(self.mosaic_partners):
                    partner = self.pool[int(rng.integers(len(self.pool)))]
                    rows, boxes = self._usable_rows(partner, use_masks, None)
                    src = _Source(partner, rows, boxes, next_row, False)
                    next_row += len(rows)
                    sources.append(src)
                    mosaic_meta.append(self._metadata(src, use_masks, use_kp))
            if self._has_paste:
                low, high = self.paste_donors
                for _ in range(int(rng.integers(low, high + 1))):
                    donor = self.pool[int(rng.integers(len(self.pool)))]
                    if donor.instances.masks is None or not use_masks:
                        continue
                    rows, boxes = self._usable_rows(donor, True, None)
                    solid = ~donor.instances.iscrowd[rows]
                    rows, boxes = rows[solid], boxes[solid]
                    if len(rows) == 0:
                        continue
                    pick = int(rng.integers(len(rows)))
                    row = rows[pick]
                    src = _Source(donor, rows[pick : pick + 1], boxes[pick : pick + 1], next_row,
                                  False)
                    next_row += 1
                    sources.append(src)
                    mask = donor.instances.masks[int(row)].to_dense()[0].astype(np.uint8)
                    paste_meta.append({"image": donor.image, "mask": mask,
                                       "bbox_labels": {_ROW: src.first}})

        mask_binding = self.binding if use_masks and self.binding != "keypoints" else None
        compose = self._compose(mask_binding, use_kp)
        data: dict[str, Any] = {"image": image}
        dicts = self._instance_dicts(sources[0], use_masks, use_kp)
        if compose._instance_binding:
            data["instances"] = dicts
        else:
            data["bboxes"] = np.array([d["bbox"] for d in dicts], np.float32).reshape(-1, 4)
            data[_ROW] = [d["bbox_labels"][_ROW] for d in dicts]
        if self._mosaic:
            data["mosaic_metadata"] = mosaic_meta
        if self._has_paste:
            data["copy_paste_metadata"] = paste_meta
        log = self._logs.get((mask_binding, use_kp))
        if log is not None:
            log.removed.clear()
        out = compose(**data, invocation_seed=invocation_seed)
        removed = dict(log.removed) if log is not None else {}
        return self._assemble(sample, sources, out, use_masks, use_kp, drops, removed)

    def _usable_rows(
        self, sample: Sample, use_masks: bool, drops: list[Drop] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows albumentationsx can take and their ``(R, 4)`` boxes; the others are dropped
        (recorded for the primary). With masks the boxes are the masks' tight boxes, computed
        once here (an empty mask has a zero box)."""
        inst = sample.instances
        n = len(inst)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 4), np.float32)
        h, w = inst.image_size
        if use_masks:
            assert inst.masks is not None
            boxes = inst.masks.boxes()
            empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            bad_reason = np.where(empty, "empty_mask", "")
        else:
            boxes = inst.boxes.copy()
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            degenerate = (boxes[:, 2] - boxes[:, 0] <= 0) | (boxes[:, 3] - boxes[:, 1] <= 0)
            bad_reason = np.where(degenerate, "degenerate_box", "")
        if drops is not None:
            for i in np.flatnonzero(bad_reason != ""):
                drops.append(Drop(int(inst.ids[i]), str(bad_reason[i]), int(inst.labels[i]),
                                  self.stage, "on input, before augmentation"))
        rows = np.flatnonzero(bad_reason == "").astype(np.int64)
        return rows, boxes[rows]

    def _instance_dicts(self, src: _Source, use_masks: bool, use_kp: bool) -> list[dict[str, Any]]:
        inst = src.sample.instances
        if len(src.rows) == 0:
            return []
        boxes = src.boxes
        dense = inst.masks[src.rows].to_dense() if use_masks and inst.masks is not None else None
        out = []
        for j, row in enumerate(src.rows):
            d: dict[str, Any] = {"bbox": boxes[j], "bbox_labels": {_ROW: src.first + j}}
            if dense is not None:
                d["mask"] = dense[j].view(np.uint8)
            if use_kp:  # a partner without keypoints offers none (they come out unlabelled)
                kps = inst.keypoints
                k = 0 if kps is None else kps.shape[1]
                d["keypoints"] = (kps[row, :, :2].copy() if kps is not None and k
                                  else np.zeros((0, 2), np.float32))
                d["keypoint_labels"] = {_KP: list(range(k))}
            out.append(d)
        return out

    def _metadata(self, src: _Source, use_masks: bool, use_kp: bool) -> dict[str, Any]:
        partner = src.sample
        h, w = partner.image_size
        dicts = self._instance_dicts(src, use_masks, use_kp)
        item: dict[str, Any] = {
            "image": partner.image,
            "bboxes": np.stack([d["bbox"] for d in dicts]).astype(np.float32)
            if dicts else np.zeros((0, 4), np.float32),
            "bbox_labels": {_ROW: [d["bbox_labels"][_ROW] for d in dicts]},
        }
        if use_masks:
            item["masks"] = (np.stack([d["mask"] for d in dicts]) if dicts
                             else np.zeros((0, h, w), np.uint8))
        if use_kp:
            item["keypoints"] = (np.concatenate([d["keypoints"] for d in dicts]) if dicts
                                 else np.zeros((0, 2), np.float32))
            item["keypoint_labels"] = {_KP: [kk for d in dicts for kk in d["keypoint_labels"][_KP]]}
        return item

    # assembling -----------------------------------------------------------------------------

    def _assemble(
        self, sample: Sample, sources: list[_Source], out: dict[str, Any], use_masks: bool,
        use_kp: bool, drops: list[Drop], removed: dict[int, tuple[str, str]],
    ) -> Sample:
        image = np.ascontiguousarray(out["image"])
        h, w = image.shape[:2]
        inst = sample.instances
        # global row -> (source index, local row)
        owner: list[tuple[int, int]] = []
        for s, src in enumerate(sources):
            owner.extend((s, int(r)) for r in src.rows)

        if "instances" in out:
            results = out["instances"]
        else:
            results = [{"bbox": b, "bbox_labels": {_ROW: r}}
                       for b, r in zip(out["bboxes"], out[_ROW], strict=True)]

        k = inst.keypoints.shape[1] if inst.keypoints is not None else 0
        reflected = _reflection_parity(out.get("applied_transforms", []))
        pairs = self._pairs(sample, k) if reflected and k else {}

        seen: set[int] = set()
        kept_rows: list[int] = []
        items: list[BitmapMask] = []
        boxes: list[np.ndarray] = []
        keypoints: list[np.ndarray] = []
        for result in results:
            row = int(round(float(result["bbox_labels"][_ROW])))
            s, local = owner[row]
            src_inst = sources[s].sample.instances
            label = int(src_inst.labels[local])
            mask_item = tight_bitmap(_plane(result["mask"])) if use_masks else None
            area = 0
            if mask_item is not None and mask_item.bitmap.size:
                # a tight bitmap has pixels; count them only when a threshold needs the number
                area = int(np.count_nonzero(mask_item.bitmap)) if self.min_area > 1 else 1
            box = np.asarray(result["bbox"], np.float32)[:4]
            reason, detail = "", ""
            if mask_item is not None and area == 0:
                reason, detail = "empty_mask", "the mask has no pixels after augmentation"
            elif mask_item is not None and area < self.min_area:
                reason, detail = "below_min_area", f"mask area {area} px < min_area={self.min_area:g}"
            elif mask_item is None:
                bw, bh = box[2] - box[0], box[3] - box[1]
                if bw <= 0 or bh <= 0:
                    reason, detail = "degenerate_box", f"box {box.tolist()} has no area"
                elif bw * bh < self.min_area:
                    reason, detail = ("below_min_area",
                                      f"box area {bw * bh:.1f} < min_area={self.min_area:g}")
            if reason:
                if sources[s].primary and row not in seen:
                    drops.append(Drop(int(src_inst.ids[local]), reason, label, self.stage, detail))
                continue
            kept_rows.append(row)
            if mask_item is not None:
                items.append(mask_item)
                if self.boxes_follow_masks:
                    box = _tight_box(mask_item)
            boxes.append(box)
            if k:
                keypoints.append(self._keypoints(result, src_inst, local, k, (h, w), pairs))
            seen.add(row)

        survived = {row for row in kept_rows if sources[owner[row][0]].primary}
        for j, row in enumerate(sources[0].rows):
            if j not in survived and not any(d.annotation_id == int(inst.ids[row]) for d in drops):
                if j in removed:  # albumentationsx's box filter removed it: we saw why
                    reason, detail = removed[j]
                elif self.needs_pool and (self._has_paste or self.min_visibility > 0):
                    # removed inside a mixing transform's own filter (Mosaic's cell crop and
                    # visibility pass, CopyAndPaste's occlusion pass), which instkit cannot see
                    reason = "below_min_visibility"
                    detail = ("removed inside a mixing transform: it left its Mosaic cell, was "
                              "covered by a pasted object, or its visible fraction fell below "
                              f"min_visibility={self.min_visibility:g}")
                else:  # geometric transforms drop boxes wholly outside the frame themselves
                    reason = "cropped_out"
                    detail = "removed inside a transform: its box left the frame"
                drops.append(Drop(int(inst.ids[row]), reason, int(inst.labels[row]), self.stage, detail))

        new = self._columns(sources, owner, kept_rows, (h, w), items if use_masks else None,
                            boxes, keypoints if k else None, k)
        meta = sample.meta.copy()
        meta.drops.extend(drops)
        mixed = sum(1 for row in kept_rows if not sources[owner[row][0]].primary)
        if self.needs_pool:
            offered = sum(len(src.rows) for src in sources[1:])
            meta.extra["mixed_in"] = {"offered": offered, "kept": mixed}
        if use_masks is False and inst.masks is not None:
            meta.notes.append(f"{self.stage}: masks not carried (binding={self.binding!r})")
        return Sample.from_array(image, new, sample.image_id, meta)

    def _pairs(self, sample: Sample, k: int) -> dict[int, list[tuple[int, int]]]:
        """Flip pairs per label (key -1: the same pairs for every label)."""
        if self.flip_pairs is not None:
            return {-1: self.flip_pairs}
        table = sample.meta.categories
        if table is None:
            return {}
        return {label: [(a, b) for a, b in table.flip_pairs(label) if a < k and b < k]
                for label in range(len(table))}

    def _keypoints(
        self, result: dict[str, Any], src_inst: Instances, local: int, k: int,
        size: tuple[int, int], pairs: dict[int, list[tuple[int, int]]],
    ) -> np.ndarray:
        h, w = size
        row = np.zeros((k, 3), np.float32)
        src_kp = src_inst.keypoints
        if src_kp is None or src_kp.shape[1] != k:
            return row  # pasted from a sample without these keypoints: not labelled
        points = np.asarray(result.get("keypoints", np.zeros((0, 2))), np.float32).reshape(-1, 2)
        index = (result.get("keypoint_labels") or {}).get(_KP, [])
        for (x, y), kk in zip(points[:, :2], index, strict=True):
            kk = int(round(float(kk)))
            v = float(src_kp[local, kk, 2])
            if v <= 0:
                continue
            inside = 0 <= x < w and 0 <= y < h
            row[kk] = (x, y, v if inside else 0.0)
        label = int(src_inst.labels[local])
        for a, b in pairs.get(-1, pairs.get(label, [])):
            row[[a, b]] = row[[b, a]]
        return row

    def _columns(
        self, sources: list[_Source], owner: list[tuple[int, int]], kept: list[int],
        size: tuple[int, int], items: list[BitmapMask] | None, boxes: list[np.ndarray],
        keypoints: list[np.ndarray] | None, k: int,
    ) -> Instances:
        primary = sources[0].sample.instances
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
            s, local = owner[row]
            src = sources[s]
            si = src.sample.instances
            labels[j] = si.labels[local]
            crowd[j] = si.iscrowd[local]
            if src.primary and row not in seen:
                ids[j] = si.ids[local]
            else:
                while next_id in used:
                    next_id += 1
                ids[j] = next_id
                used.add(next_id)
            seen.add(row)
            if scores is not None:
                scores[j] = si.scores[local] if si.scores is not None else np.nan
            for name in extra_names:
                column_values = si.extras.get(name)
                extras[name].append(None if column_values is None else column_values[local])
            if self.needs_pool:
                extras["source_dataset"].append(
                    str(src.sample.meta.source or "") if src.primary else self.pool_name)
                extras["source_image_id"].append(int(src.sample.image_id))
                extras["source_annotation_id"].append(int(si.ids[local]))
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
                masks=None if items is None else Masks(items, size),
                keypoints=None if keypoints is None else (
                    np.stack(keypoints) if keypoints else np.zeros((0, k, 3), np.float32)),
                iscrowd=crowd,
                ids=ids,
                scores=scores,
                extras=extra_arrays,
            )
        except InstancesError as exc:  # pragma: no cover - a bug here, not in user data
            raise InstancesError(f"augmented instances are inconsistent: {exc.message}",
                                 Location(image_id=sources[0].sample.image_id)) from None


def _mask_safe(transforms: list[Any]) -> list[Any]:
    """Swap albumentationsx's ``Perspective`` (IndexError on instance masks over 256x256 px) for
    instkit's subclass with a working mask path; everything else is left as given."""
    for transform in _walk(transforms):
        if type(transform) is A.Perspective:
            transform.__class__ = Perspective
    return transforms


class _RemovalLog:
    """Learns why albumentationsx's box filter removed each row, from the rows it removed.

    Installed on the bbox processor of a Compose instkit built; ``removed`` maps the hidden row
    label to ``(reason, detail)``: ``cropped_out`` (less than a pixel of the box, or nothing, left
    in the frame), ``below_min_visibility`` (the visible fraction of its box under the
    threshold), ``degenerate_box`` (the transformed box has no area)."""

    def __init__(self, processor: Any, column: str) -> None:
        self.processor = processor
        self.column = column
        self.removed: dict[int, tuple[str, str]] = {}

    @classmethod
    def attach(cls, compose: Any) -> _RemovalLog | None:
        processor = compose.processors.get("bboxes")
        if processor is None:
            return None
        names = getattr(compose, "_bbox_label_map", None) or {}
        column = next((inner for inner, user in names.items() if user == _ROW), _ROW)
        if column not in (processor.params.label_fields or []):
            return None
        log = cls(processor, column)
        processor.filter_with_keep_mask = log
        return log

    def __call__(self, data: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        processor = self.processor
        filtered, keep = type(processor).filter_with_keep_mask(processor, data, shape)
        if len(keep) and not keep.all():
            self._record(np.asarray(data)[~np.asarray(keep, bool)], shape)
        return filtered, keep

    def _record(self, rows: np.ndarray, shape: tuple[int, ...]) -> None:
        params = self.processor.params
        fields = list(params.label_fields)
        column = rows.shape[1] - len(fields) + fields.index(self.column)
        h, w = int(shape[0]), int(shape[1])
        coords = rows[:, :4].astype(np.float64)  # normalised xyxy, as albumentationsx filters them
        full = np.clip(coords[:, 2] - coords[:, 0], 0, None) * w * np.clip(
            coords[:, 3] - coords[:, 1], 0, None) * h
        clipped = coords.clip(0.0, 1.0)
        cw = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * w
        ch = np.clip(clipped[:, 3] - clipped[:, 1], 0, None) * h
        eps = 1e-7
        for i in range(len(rows)):
            row = int(round(float(rows[i, column])))
            if row in self.removed:
                continue
            visible = cw[i] * ch[i] / full[i] if full[i] > eps else 0.0
            if full[i] <= eps:
                reason, detail = "degenerate_box", "its transformed box has no area"
            elif (cw[i] * ch[i] <= eps or cw[i] < params.min_width - eps
                  or ch[i] < params.min_height - eps):
                reason = "cropped_out"
                detail = (f"{visible:.1%} of its box ({cw[i]:.1f}x{ch[i]:.1f} px) was left in "
                          f"the {h}x{w} frame")
            elif visible < params.min_visibility:
                reason = "below_min_visibility"
                detail = (f"visible fraction of its box {visible:.3f} < "
                          f"min_visibility={params.min_visibility:g}")
            else:
                reason, detail = "cropped_out", "albumentationsx's box filter removed it"
            self.removed[row] = (reason, detail)


def _plane(mask: Any) -> np.ndarray:
    """One instance's ``(H, W)`` mask (albumentationsx may leave a trailing channel axis)."""
    array = np.asarray(mask)
    return array.reshape(array.shape[:2]) if array.ndim == 3 else array


def _tight_box(item: BitmapMask) -> np.ndarray:
    """The box of a box-tight bitmap: its offset and shape (no pixel scan)."""
    y0, x0 = item.offset
    bh, bw = item.bitmap.shape
    if bh == 0:
        return np.zeros(4, np.float32)
    return np.array([x0, y0, x0 + bw, y0 + bh], np.float32)


__all__ = ["Augment"]
