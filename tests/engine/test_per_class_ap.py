"""per_class_ap: mask AP by class, box AP where masks were not evaluated."""

from __future__ import annotations

import math
from types import SimpleNamespace

from instkit.engine.evaluate import per_class_ap


def test_mask_ap_first_then_box_ap():
    result = SimpleNamespace(per_class=[
        {"name": "boxes-only", "mask_ap": float("nan"), "box_ap": 0.5},
        {"name": "masked", "mask_ap": 0.25, "box_ap": 0.5},
        {"name": "absent", "mask_ap": float("nan"), "box_ap": float("nan")},
    ])
    values = per_class_ap(result)
    assert values["boxes-only"] == 0.5 and values["masked"] == 0.25
    assert math.isnan(values["absent"])
