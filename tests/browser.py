"""Headless Chromium for the rendering tests: a page's screenshot and its DOM after its scripts ran.

Chromium is Debian's package (``.ci/run`` installs it; the ``chromium`` fixture of ``conftest.py``
finds it). Every host but the loopback interface is unresolvable for the browser, so a page that
needs the internet (a CDN, a tag manager) shows it by not rendering. With ``CLVCAST_SCREENSHOTS``
set to a directory, each screenshot is also copied there for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

#: Environment variable: a directory that receives a copy of every screenshot.
SCREENSHOTS_ENV = "CLVCAST_SCREENSHOTS"
#: Milliseconds of page time the browser runs the page's scripts and fetches before it captures.
VIRTUAL_TIME_MS = 15_000


def _run(binary: str, url: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="clvcast-chromium-") as profile:
        cmd = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={profile}",
            # Offline: any name but the loopback addresses fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args, url,
        ]  # fmt: skip
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)


def screenshot(
    binary: str, url: str, png: Path, *, width: int = 1280, height: int = 2400, timeout: float = 120
) -> Path:
    """Capture ``url`` (``http://127.0.0.1...`` or ``file://``) into ``png``, window ``width`` x ``height`` px.

    Raises
    ------
    subprocess.CalledProcessError, subprocess.TimeoutExpired
        Chromium failed or hung.
    RuntimeError
        Chromium wrote no file.
    """
    _run(binary, url, f"--screenshot={png.resolve()}", f"--window-size={width},{height}", timeout=timeout)
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url} to {png}")
    keep = os.environ.get(SCREENSHOTS_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
    return png


def rendered_dom(binary: str, url: str, *, timeout: float = 120) -> str:
    """The page's DOM as HTML text once its scripts have run (``--dump-dom``)."""
    return _run(binary, url, "--dump-dom", timeout=timeout).stdout


def pixels_near(png: Path, colour: tuple[int, int, int], *, tolerance: int = 30) -> int:
    """How many pixels of ``png`` lie within ``tolerance`` (sum of absolute RGB differences) of ``colour``."""
    from PIL import Image

    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.asarray(colour)).sum(axis=2) < tolerance).sum())


def section_images(dom: str, section_id: str) -> list[np.ndarray]:
    """The PNG data-URI images of one section of a page's DOM, decoded as RGB arrays (height, width, 3).

    A section runs from the heading with ``id="section_id"`` to the next ``<h2``; an image that does
    not decode raises (PIL's error), so an empty list or an error means the section did not render
    its charts.
    """
    import base64
    import io
    import re

    from PIL import Image

    start = dom.find(f'id="{section_id}"')
    if start < 0:
        return []
    end = dom.find("<h2", start)
    part = dom[start : end if end >= 0 else len(dom)]
    images = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', part):
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            images.append(np.asarray(image.convert("RGB")))
    return images
