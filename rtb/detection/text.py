"""Text lines: PP-OCR's text detection network (a DB detector, PP-OCRv6 small) run by RapidOCR on ONNX Runtime.

The model (``PP-OCRv6_det_small.onnx``, 9.9 MB, Apache-2.0, see ``MODEL_LICENSES.md`` in the wheel) ships
inside the ``rapidocr`` wheel; RapidOCR does the pre- and post-processing (resize to multiples of 32,
normalisation, the DB binarisation, unclipping and box scoring) and ONNX Runtime runs the network. Only
detection runs: no orientation classifier, no recognition, and the model path is given explicitly, so
RapidOCR never tries to download anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np

from rtb.detection.config import DetectConfig
from rtb.detection.extra import MODEL_FILE, model_file, require_extra
from rtb.detection.regions import Detection

DETECTOR_NAME = "rapidocr-ppocr-det"


class TextDetector:
    """PP-OCR text detection, loaded once; ``detect`` on 8-bit RGB arrays. Deterministic at a fixed thread count."""

    def __init__(self, config: DetectConfig) -> None:
        require_extra(("text",))
        # ONNX Runtime sends telemetry only on Windows; say no everywhere.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime
        from rapidocr import RapidOCR

        params = {
            "Global.use_cls": False,
            "Global.use_rec": False,
            "Global.log_level": "error",
            # `detect` sizes the image itself (working_scale); RapidOCR only rounds the sides to multiples of 32.
            "Global.max_side_len": 1 << 16,
            "Global.min_side_len": 32,
            "Det.model_path": config.text_model or str(model_file()),
            "Det.limit_side_len": 1 << 16,
            "Det.limit_type": "max",
            "Det.thresh": config.text_pixel_score,
            "Det.box_thresh": config.text_score,
            "Det.unclip_ratio": config.text_unclip,
            "EngineConfig.onnxruntime.intra_op_num_threads": config.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._engine = RapidOCR(params=params)
        self.config = config
        self.name = DETECTOR_NAME
        model = MODEL_FILE.removesuffix(".onnx") if config.text_model is None else Path(config.text_model).name
        self.version = (
            f"{model} (rapidocr {importlib.metadata.version('rapidocr')}), onnxruntime {onnxruntime.__version__}"
        )

    def working_scale(self, width: int, height: int) -> float:
        """How much the image is resized before detection (see ``text_max_side`` and ``text_min_side``)."""
        longest, shortest = max(width, height), min(width, height)
        if longest > self.config.text_max_side:
            return self.config.text_max_side / longest
        if shortest < self.config.text_min_side:
            return min(self.config.text_min_side / shortest, self.config.text_max_side / longest)
        return 1.0

    def is_line(self, quad: np.ndarray, width: int, height: int) -> bool:
        """False for what cannot be a line of text (``text_blob_*``, ``text_max_line``): a square-ish
        quadrilateral over a large part of the image, or one taller than a line can be."""
        sides = np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[3] - quad[0])
        long_side, short_side = max(sides), max(min(sides), 1e-6)
        if short_side > self.config.text_max_line * min(width, height):
            return False
        extent = np.ptp(quad[:, 0]) * np.ptp(quad[:, 1])
        return not (
            long_side / short_side < self.config.text_blob_aspect
            and extent > self.config.text_blob_area * width * height
        )

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Text lines in ``rgb`` (``H×W×3`` uint8, RGB): the axis-aligned box of each detected quadrilateral,
        top to bottom."""
        import cv2

        height, width = rgb.shape[:2]
        # 1. Bring the image to its working size (PP-OCR was trained on OpenCV's BGR order).
        scale = self.working_scale(width, height)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        # 2. Detect.
        result = self._engine(bgr, use_det=True, use_cls=False, use_rec=False)
        if result.boxes is None or len(result.boxes) == 0:
            return []
        # 3. Quadrilaterals back to the image's pixels; what cannot be a line dropped.
        detections = []
        for quad, score in zip(np.asarray(result.boxes, dtype=np.float64), result.scores):
            quad = quad / scale
            if not self.is_line(quad, width, height):
                continue
            x0, y0 = max(0, int(np.floor(quad[:, 0].min()))), max(0, int(np.floor(quad[:, 1].min())))
            x1, y1 = min(width, int(np.ceil(quad[:, 0].max()))), min(height, int(np.ceil(quad[:, 1].max())))
            if x1 > x0 and y1 > y0:
                detections.append(Detection("text", (x0, y0, x1, y1), float(score), self.name, self.version))
        return detections
