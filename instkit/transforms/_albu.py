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

__all__ = ["A", "Perspective", "telemetry_off"]
