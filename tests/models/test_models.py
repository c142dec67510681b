"""Models: offline construction, a few steps reduce the loss, outputs -> Instances (checked
against the transformers processor's post-processing)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("transformers")

from instkit.data import Collator  # noqa: E402
from instkit.errors import InstkitError  # noqa: E402
from instkit.models import adapter_from_config, build_model  # noqa: E402
from instkit.synthetic import categories, make_samples  # noqa: E402
from tests.conftest import available_devices  # noqa: E402

KINDS = {"maskrcnn": {"backbone": "tiny"}, "rfdetr": {"tiny": True}}


@pytest.fixture(scope="module")
def samples():
    return make_samples(2, seed=5, image_size=(96, 96), max_instances=3, crowd_probability=0.0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_build_offline_says_random_init_once(kind, caplog):
    import instkit.models.base as base

    base._ANNOUNCED.clear()
    with caplog.at_level(logging.WARNING, logger="instkit.models"):
        first = build_model(kind, categories(), **KINDS[kind])
        build_model(kind, categories(), **KINDS[kind])
    said = [r for r in caplog.records if "random initialisation" in r.getMessage()]
    assert len(said) == 1
    assert first.pretrained is None
    assert first.num_classes == len(categories())


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_few_steps_reduce_the_loss(kind, device, samples):
    torch.manual_seed(0)
    adapter = build_model(kind, categories(), **KINDS[kind])
    model = adapter.model.to(device).train()
    batch = adapter.make_collator(device)(samples)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if kind == "maskrcnn"
                 else torch.optim.AdamW(model.parameters(), lr=1e-3))
    losses = []
    for _ in range(6):
        loss, parts = adapter.loss(model, batch)
        assert torch.isfinite(loss) and parts
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert min(losses[-2:]) < losses[0], losses


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_predictions_are_instances_in_the_sample_frame(kind):
    torch.manual_seed(0)
    adapter = build_model(kind, categories(), **KINDS[kind])
    # two aspect ratios: the RF-DETR batch is padded, Mask R-CNN resizes inside the model
    batch_samples = make_samples(1, seed=1, image_size=(96, 64)) + make_samples(
        1, seed=2, image_size=(48, 80))
    batch = adapter.make_collator("cpu")(batch_samples)
    sizes = [s.image_size for s in batch_samples]
    predicted = adapter.predict(adapter.model.eval(), batch, sizes)
    assert len(predicted) == 2
    for inst, size in zip(predicted, sizes, strict=True):
        assert inst.image_size == size
        assert inst.scores is not None and inst.scores.dtype == np.float32
        assert len(inst) > 0  # random weights still score above the 0.0 / 0.05 thresholds
        assert ((inst.labels >= 0) & (inst.labels < adapter.num_classes)).all()
        assert inst.masks is not None and inst.masks.to_dense().shape[1:] == size
        assert (inst.boxes[:, 2] <= size[1]).all() and (inst.boxes[:, 3] <= size[0]).all()


def test_rfdetr_postprocess_agrees_with_the_processor():
    from transformers import RfDetrImageProcessor

    adapter = build_model("rfdetr", categories(), tiny=True, score_threshold=0.3)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 6, generator=gen)
    boxes = torch.rand(2, 30, 4, generator=gen) * 0.5 + 0.2
    masks = torch.randn(2, 30, 32, 32, generator=gen) * 3

    class Out:
        pass

    out = Out()
    out.logits, out.pred_masks, out.pred_boxes = logits, masks, boxes
    sizes = [(100, 120), (64, 64)]
    ours = adapter.postprocess(logits, boxes, masks, sizes, torch.ones(2, 128, 128))
    theirs = RfDetrImageProcessor().post_process_instance_segmentation(
        out, threshold=0.3, target_sizes=sizes, return_binary_maps=True, top_k=100)
    for mine, ref in zip(ours, theirs, strict=True):
        ref_scores = np.array([s["score"] for s in ref["segments_info"]])
        ref_labels = np.array([s["label_id"] for s in ref["segments_info"]])
        assert len(mine) == len(ref_scores) > 0
        np.testing.assert_allclose(mine.scores, ref_scores, atol=1e-6)
        np.testing.assert_array_equal(mine.labels, ref_labels)
        np.testing.assert_array_equal(mine.masks.to_dense(), ref["segmentation"].numpy())
    # the boxes: the processor's object-detection post-processing, same top-k order
    det = RfDetrImageProcessor().post_process_object_detection(out, threshold=0.3,
                                                               target_sizes=sizes, top_k=100)
    for mine, ref in zip(ours, det, strict=True):
        ref_boxes = ref["boxes"].numpy()
        ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clip(0, mine.image_size[1])
        ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clip(0, mine.image_size[0])
        keep = [i for i, s in enumerate(ref["scores"].tolist()) if s in set(mine.scores.tolist())]
        np.testing.assert_allclose(mine.boxes, ref_boxes[keep], atol=1e-3)


def test_rfdetr_padding_is_cut_before_upsampling():
    adapter = build_model("rfdetr", categories(), tiny=True, score_threshold=0.5)
    masks = torch.full((1, 1, 32, 32), -5.0)
    masks[0, 0, :16, :16] = 5.0  # the whole real region of a half-height, half-width image
    pixel_mask = torch.zeros(1, 128, 128)
    pixel_mask[0, :64, :64] = 1
    logits = torch.full((1, 1, 6), -9.0)
    logits[0, 0, 2] = 9.0
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5]]])
    (inst,) = adapter.postprocess(logits, boxes, masks, [(40, 40)], pixel_mask)
    assert len(inst) == 1 and inst.labels[0] == 2
    assert inst.masks.to_dense()[0].all()  # covers the image, not its top-left quarter
    np.testing.assert_allclose(inst.boxes[0], [0, 0, 40, 40], atol=1e-4)


def test_maskrcnn_loads_a_weights_file_with_another_class_count(tmp_path):
    source = build_model("maskrcnn", categories(), backbone="tiny")
    path = tmp_path / "weights.pth"
    torch.save(source.model.state_dict(), path)
    fewer = categories()[0:1]
    from instkit.categories import Categories

    target = build_model("maskrcnn", Categories([categories()[0]]), backbone="tiny",
                         weights=path)
    assert target.pretrained == str(path) and len(fewer) == 1
    src, dst = source.model.state_dict(), target.model.state_dict()
    torch.testing.assert_close(dst["backbone.body.layer1.0.conv1.weight"],
                               src["backbone.body.layer1.0.conv1.weight"])
    assert dst["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2  # re-initialised head


def test_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(InstkitError, match="not found"):
        build_model("maskrcnn", categories(), backbone="tiny", weights=tmp_path / "nope.pth")
    with pytest.raises(InstkitError, match="not found"):
        build_model("rfdetr", categories(), weights=tmp_path / "nope")
    with pytest.raises(InstkitError, match="backbone"):
        build_model("maskrcnn", categories(), backbone="vgg")
    with pytest.raises(InstkitError, match="multiples"):
        build_model("rfdetr", categories(), tiny=True, image_size=100)
    with pytest.raises(InstkitError, match="unknown model kind"):
        build_model("yolo", categories())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_rebuilt_from_config_has_the_same_architecture(kind):
    adapter = build_model(kind, categories(), **KINDS[kind])
    again = adapter_from_config(adapter.config, adapter.categories)
    assert again.model.load_state_dict(adapter.model.state_dict(), strict=True) is not None
    assert isinstance(adapter.make_collator(), Collator)
