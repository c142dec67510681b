"""The evaluation page's error-analysis sections: the confusion matrix agrees with the page's own
per-image TP/FP/FN (one matcher), and the pictures are there."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instkit.analysis import ERROR_TYPES
from instkit.viz.pages import eval_report
from tests.viz.conftest import write_predictions
from tests.viz.test_pages import load_data


def test_eval_page_has_the_confusion_matrix_and_error_breakdown(tinycoco: dict, tinycoco_val,
                                                               tmp_path: Path) -> None:
    preds = write_predictions(tinycoco_val, tmp_path / "preds.json")
    out = tmp_path / "eval"
    eval_report(tinycoco["val_json"], preds, tinycoco["val_images"], out, progress=False,
                thumb_size=96, detail_size=160)
    data = load_data(out)
    analysis = data["analysis"]
    matrix = np.asarray(analysis["confusion"])
    c = len(analysis["classes"]) - 1
    tp = sum(r["tp"] for r in data["images"])
    fp = sum(r["fp"] for r in data["images"])
    fn = sum(r["fn"] for r in data["images"])
    assert np.trace(matrix[:c, :c]) == tp
    assert matrix[:, :c].sum() - tp == fp  # every false positive lands off the diagonal
    assert matrix[:c, :].sum() - tp == fn
    assert set(analysis["errors"]) == set(ERROR_TYPES)
    titles = [chart["title"] for chart in data["charts"]]
    assert "Confusion matrix" in titles and "Error breakdown" in titles
    assert "Found by object size" in titles
    # per-class error counts sum to the breakdown's
    for name in ERROR_TYPES:
        assert sum(r["errors"].get(name, 0) for r in data["per_class"]) == analysis["errors"][name]
    svg = next(chart["svg"] for chart in data["charts"] if chart["title"] == "Confusion matrix")
    assert svg.startswith("<svg") and "background" in svg and "person" in svg


def test_eval_page_at_the_best_f1_score(tinycoco: dict, tinycoco_val, tmp_path: Path) -> None:
    """``score_threshold="f1"``: the page's counts, confusion matrix and analysis all use the one
    resolved score, the one with the best F1."""
    from instkit.evaluation import evaluate, read_coco_results
    from instkit.io.coco import read_coco

    preds = write_predictions(tinycoco_val, tmp_path / "preds.json")
    out = tmp_path / "eval"
    eval_report(tinycoco["val_json"], preds, tinycoco["val_images"], out, progress=False,
                thumb_size=96, detail_size=160, score_threshold="f1")
    data = load_data(out)
    gt = read_coco(tinycoco["val_json"])
    best = evaluate(gt, read_coco_results(preds, gt), score_threshold="f1", progress=False)
    assert data["analysis"]["score_threshold"] == best.score_threshold != 0.5
    matrix = np.asarray(data["analysis"]["confusion"])
    c = len(data["analysis"]["classes"]) - 1
    assert np.trace(matrix[:c, :c]) == sum(r["tp"] for r in data["images"])
    assert sum(r["tp"] for r in data["images"]) == sum(v["tp"] for v in best.per_image.values())
