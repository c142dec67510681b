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


__all__ = ["A", "telemetry_off"]
