"""Datasets, loaders and the batch collator (needs torch: ``pip install 'instkit[torch]'``).

    dataset = InstanceDataset(read_coco("train.json"), transform=train_default(), seed=0)
    collator = Collator("rfdetr", device="cuda", size={"height": 576, "width": 576})
    loader = DataLoader(dataset, batch_size=16, num_workers=4, pin_memory=True,
                        persistent_workers=True, collate_fn=collator.pack)
    for packed in loader:
        batch = collator.finish(packed)          # on the GPU
        loss = model(**batch).loss
"""

from instkit.data.collate import (
    BatchInfo,
    Collator,
    InstanceBatch,
    KeypointRCNNBatch,
    MaskRCNNBatch,
    RfDetrBatch,
    resized_size,
)
from instkit.data.dataset import DatasetError, InstanceDataset, derive_seed, hf_transform
from instkit.data.packing import CollateError, PackedBatch, pack_samples
from instkit.data.streaming import StreamingDataset

__all__ = [
    "BatchInfo",
    "CollateError",
    "Collator",
    "DatasetError",
    "InstanceBatch",
    "InstanceDataset",
    "KeypointRCNNBatch",
    "MaskRCNNBatch",
    "PackedBatch",
    "RfDetrBatch",
    "StreamingDataset",
    "derive_seed",
    "hf_transform",
    "pack_samples",
    "resized_size",
]
