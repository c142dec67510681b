"""Install Debian's chromium for the page tests (tests/viz) when it is missing.

Run by ``make test`` before pytest. Quiet, idempotent and never failing: where chromium cannot be
installed (no root, no apt, no package source) the page tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> str | None:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def main() -> int:
    if find_chromium():
        return 0
    if not shutil.which("apt-get"):
        print("setup_browser: no apt-get here; the page tests will skip", file=sys.stderr)
        return 0
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        print("setup_browser: not root, cannot install chromium; the page tests will skip",
              file=sys.stderr)
        return 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    for attempt in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(attempt, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, timeout=900, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"setup_browser: {' '.join(attempt)} failed: {exc}", file=sys.stderr)
            return 0
        if attempt is install and done.returncode == 0 and find_chromium():
            return 0
    tail = (done.stderr or "").strip().splitlines()[-3:]
    print("setup_browser: could not install chromium; the page tests will skip. "
          + " | ".join(tail), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
