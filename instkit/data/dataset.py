"""``InstanceDataset``: a torch ``Dataset`` of ``Sample``s over any instkit source.

Sources: a ``CocoDataset`` (its annotations live in a few flat numpy arrays, so forked
DataLoader workers share them copy-on-write instead of each holding a copy of the annotation
file), a Hugging Face ``datasets.Dataset`` in the Transformers guide's layout (Arrow, memory
mapped; rows decoded on access through ``instkit.io.hf``), an ``HFDataset``, or any sequence of
``Sample``s. Images load lazily in ``__getitem__``, in the worker that asks for them.

Augmentation is reproducible: an instkit transform (one that takes ``seed=``) is called with a
seed derived from ``(seed, epoch, index)``, so a sample's augmentation depends on neither the
worker that made it nor the order of the batches. The epoch lives in shared memory, so
``set_epoch`` reaches persistent workers too. A mixing transform (``needs_pool``) is bound to
the dataset's source with ``with_pool`` once, so its partners come from the same data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from instkit.errors import InstkitError, Location, require
from instkit.sample import Sample

if TYPE_CHECKING:
    import torch
else:  # at run time, a clear error naming the extra when torch is missing
    torch = require("torch", "torch")


class DatasetError(InstkitError, ValueError):
    """A source or transform that does not give ``Sample``s; names the index and image_id."""


def _is_hf_dataset(source: Any) -> bool:
    module = type(source).__module__ or ""
    return module.startswith("datasets.") and hasattr(source, "features")


def _accepts_seed(transform: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def derive_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])
               .generate_state(1)[0])


class InstanceDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> ``Sample`` (transformed). See the module docstring.

    ``source``: ``CocoDataset``, ``datasets.Dataset`` (guide layout), ``HFDataset`` or a sequence
    of ``Sample``s. ``transform``: ``transform(sample, *, seed=...) -> Sample`` (an instkit
    transform) or any ``transform(sample) -> Sample``. ``categories`` is used for HF datasets.
    """

    def __init__(self, source: Any, transform: Callable[..., Sample] | None = None, *,
                 seed: int = 0, categories: Any = None) -> None:
        if _is_hf_dataset(source):
            from instkit.io.hf import read_hf

            source = read_hf(source, categories=categories)
        if not isinstance(source, Sequence) and not (
                hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise TypeError(f"InstanceDataset needs a sequence of Samples, a CocoDataset or a "
                            f"datasets.Dataset; got {type(source).__name__}")
        self.source = source
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        if transform is not None and getattr(transform, "needs_pool", False):
            transform = transform.with_pool(source)  # type: ignore[attr-defined]
        self.transform = transform
        self._seeded = transform is not None and _accepts_seed(transform)

    @property
    def categories(self) -> Any:
        return getattr(self.source, "categories", None)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (seen by persistent workers too)."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        if isinstance(index, (np.integer, torch.Tensor)):
            index = int(index)
        if not isinstance(index, int):
            raise TypeError(f"index an InstanceDataset with an int, got {type(index).__name__}")
        sample = self.source[index]
        if not isinstance(sample, Sample):
            raise DatasetError(f"the source gave a {type(sample).__name__}, not a Sample",
                               Location(sample_index=index))
        if self.transform is None:
            return sample
        if self._seeded:
            out = self.transform(sample, seed=derive_seed(self.seed, self.epoch, index))
        else:
            out = self.transform(sample)
        if not isinstance(out, Sample):
            raise DatasetError(f"the transform returned a {type(out).__name__}, not a Sample",
                               Location(sample_index=index, image_id=sample.image_id))
        return out

    def __repr__(self) -> str:
        return (f"InstanceDataset({self.source!r}, transform={self.transform!r}, "
                f"seed={self.seed}, epoch={self.epoch})")


def hf_transform(transform: Callable[..., Sample] | None = None, categories: Any = None,
                 *, seed: int | None = None) -> Callable[[Mapping[str, list[Any]]], dict[str, Any]]:
    """A function for ``datasets.Dataset.with_transform``: a batch of guide-layout rows ->
    ``{"sample": [Sample, ...]}`` (optionally transformed). ``Collator`` accepts these items::

        ds = ds.with_transform(hf_transform(train_default()))
        loader = DataLoader(ds, batch_size=8, collate_fn=Collator("rfdetr"))
    """
    from instkit.io.hf import hf_row_to_sample

    seeded = transform is not None and _accepts_seed(transform)

    def apply(batch: Mapping[str, list[Any]]) -> dict[str, Any]:
        columns = list(batch)
        length = len(batch[columns[0]]) if columns else 0
        samples = []
        for k in range(length):
            row = {c: batch[c][k] for c in columns}
            sample = hf_row_to_sample(row, categories)
            if transform is not None:
                if seeded and seed is not None:
                    sample = transform(sample, seed=derive_seed(seed, 0, int(sample.image_id)))
                else:
                    sample = transform(sample)
            samples.append(sample)
        return {"sample": samples}

    return apply


__all__ = ["DatasetError", "InstanceDataset", "derive_seed", "hf_transform"]
