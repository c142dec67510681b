"""Every example script and the README's Python block run on tiny inputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path | None = None, timeout: int = 600) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            cwd=cwd or REPO, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_yolo_mosaic_copypaste(tmp_path):
    out = _run(["examples/yolo_mosaic_copypaste.py", "--count", "3", "--size", "128",
                "--out", str(tmp_path)])
    assert "augmented 3 samples" in out
    assert (tmp_path / "augmented" / "annotations.json").is_file()


def test_property_test_pipeline():
    out = _run(["examples/property_test_pipeline.py", "--examples", "4"])
    assert "my_pipeline: alignment:" in out and "0 violation(s)" in out
    assert "[box_is_mask_box]" in out


def test_convert_and_validate(tmp_path):
    out = _run(["examples/convert_and_validate.py", "--out", str(tmp_path)])
    assert "bbox-mismatch: 1" in out and "duplicate-annotation-id: 1" in out
    assert "fixed file: 0 error(s)" in out
    median = float(re.search(r"mask IoU median ([0-9.]+)", out).group(1))
    assert median > 0.9


def test_readme_python_block(tinycoco, tmp_path):
    text = (REPO / "README.md").read_text()
    block = re.search(r"## In Python\n\n```python\n(.*?)```", text, re.S).group(1)
    # A smaller model and image size keep the suite quick; everything else runs as written.
    block = block.replace('backbone="resnet50", image_size=512', 'backbone="tiny", image_size=128')
    block = block.replace("size=(512, 512)", "size=(128, 128)")
    assert 'backbone="tiny"' in block
    (tmp_path / "annotations").symlink_to(tinycoco["train_json"].parent)
    (tmp_path / "images").symlink_to(tinycoco["train_images"].parent)
    script = tmp_path / "readme_block.py"
    script.write_text(block)
    out = _run([str(script)], cwd=tmp_path)
    loss = float(re.search(r"loss ([0-9.]+)", out).group(1))
    assert loss > 0


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "examples").glob("*.py")))
def test_every_example_has_help(name):
    _run([f"examples/{name}", "--help"], timeout=300)
