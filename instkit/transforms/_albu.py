"""The one place instkit imports albumentationsx (AGPL-3.0-only or commercial).

The environment switches are set before the import, and the process-wide telemetry client is
disabled as well in case albumentationsx was imported earlier by the user's code, so nothing
instkit builds or wraps ever reaches the network.
"""

from __future__ import annotations

import os
from typing import Any

os.environ["ALBUMENTATIONS_NO_TELEMETRY"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("ALBUMENTATIONS_OFFLINE", "1")

from instkit.errors import require  # noqa: E402

A: Any = require("albumentations", "augment")


def _disable_telemetry() -> None:
    from albumentations.core.analytics.settings import settings
    from albumentations.core.analytics.telemetry import get_telemetry_client

    # In memory only: settings.update() would write a file in the user's cache directory.
    settings._settings["telemetry"] = False
    get_telemetry_client().disable()


_disable_telemetry()


def telemetry_off() -> bool:
    """True when albumentationsx can send nothing: the global switch and the client are off."""
    from albumentations.core.analytics.settings import settings
    from albumentations.core.analytics.telemetry import get_telemetry_client

    return not settings.telemetry_enabled and not get_telemetry_client().enabled



def _perspective_class() -> Any:
    import cv2
    import numpy as np

    class Perspective(A.Perspective):
        """``A.Perspective`` whose mask path works on per-instance masks of any size.

        albumentationsx 2.5.1 warps a mask larger than 256x256 px as a 2-D ``(H, W)`` frame, and
        albucore's ``warp_perspective`` then reads the frame's width as its channel count: any
        width over OpenCV's channel limit (128 in this build) sends the frame down the
        ``(H, W, C)`` chunking path, which raises IndexError. Here every mask plane is warped with
        ``cv2.warpPerspective`` directly, with the same matrix, size, border and interpolation
        albumentationsx uses (its small-image path gives identical planes).
        """

        def apply_to_mask(self, mask: Any, matrix: Any, max_height: int, max_width: int,
                          **params: Any) -> Any:
            if mask.ndim == 3 and mask.shape[2] > 1:  # (H, W, N): albumentationsx's path works
                return super().apply_to_mask(mask, matrix, max_height, max_width, **params)
            h, w = mask.shape[:2]
            if self.keep_size:
                scale = np.array([[w / max_width, 0, 0], [0, h / max_height, 0], [0, 0, 1]])
                m, dsize = scale @ matrix, (w, h)
            else:
                m, dsize = matrix, (max_width, max_height)
            out = cv2.warpPerspective(
                np.ascontiguousarray(mask.reshape(h, w)), m, dsize, flags=self.mask_interpolation,
                borderMode=self.border_mode,
                borderValue=float(np.asarray(self.fill_mask, np.float64).reshape(-1)[0]))
            return out if mask.ndim == 2 else out[:, :, None]

    Perspective.__module__ = __name__
    return Perspective


Perspective: Any = _perspective_class()


def _hsv_class() -> Any:
    import cv2
    import numpy as np
    from albucore import add_constant
    from albucore import sz_lut as lookup_u8  # typed for uint8 arrays only

    identity = np.arange(256, dtype=np.uint8)

    class HueSaturationValue(A.HueSaturationValue):
        """``A.HueSaturationValue`` with the same draws and pixel-identical output, about 4x
        faster on RGB uint8 images: the hue, saturation and value shifts become a lookup table
        per HSV plane (built with albumentationsx's own saturating ``add_constant`` on the 256
        possible values, with saturation 0 kept 0 as albumentationsx keeps it) applied between
        one RGB->HSV and one HSV->RGB conversion."""

        def apply(self, img: Any, hue_shift: float, sat_shift: float, val_shift: float,
                  **params: Any) -> Any:
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                return super().apply(img, hue_shift, sat_shift, val_shift, **params)
            if hue_shift == 0 and sat_shift == 0 and val_shift == 0:
                return img
            hue = (np.mod(np.arange(256, dtype=np.int16) + hue_shift, 180).astype(np.uint8)
                   if hue_shift != 0 else identity)
            sat = (add_constant(identity.reshape(16, 16), sat_shift, inplace=False).reshape(-1)
                   if sat_shift != 0 else identity.copy())
            sat[0] = 0
            val = (add_constant(identity.reshape(16, 16), val_shift, inplace=False).reshape(-1)
                   if val_shift != 0 else identity)
            hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV)
            # plane by plane with albucore's 256-byte lookup: split + 3 lookups + merge take
            # about 20% less than one 3-channel cv2.LUT
            planes = [lookup_u8(plane, table, inplace=True)  # type: ignore[arg-type]
                      for plane, table in zip(cv2.split(hsv), (hue, sat, val))]
            return cv2.cvtColor(cv2.merge(planes), cv2.COLOR_HSV2RGB)

    HueSaturationValue.__module__ = __name__
    return HueSaturationValue


HueSaturationValue: Any = _hsv_class()

__all__ = ["A", "HueSaturationValue", "Perspective", "telemetry_off"]
