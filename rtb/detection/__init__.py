"""Offline detection of the regions to protect: faces and text lines (captions, signatures, watermarks).

    from rtb.detection import DetectConfig, RegionDetector
    from rtb.images import decode_image

    detector = RegionDetector(DetectConfig(kinds=("face", "text"), threads=1))   # once per actor
    image = decode_image(data)                     # EXIF orientation applied
    detections = detector.detect(image)            # list[Detection]: kind, box, score, detector, version
    mask = detector.mask(image, detections)        # H×W bool: grown face boxes ∪ text boxes with a margin

The detectors' model files ship inside packages of the optional extra ``rtb[detect]`` (OpenCV's res10 SSD for
faces, PP-OCR's DB text detector through RapidOCR and ONNX Runtime); nothing is downloaded. This package
imports them only when a detector is built, so ``import rtb`` works without the extra; ``require_extra``
raises a one-line ``ImportError`` naming it. Figures and the choice of detectors: docs/detection.md.
"""

from rtb.detection.config import KINDS, DetectConfig
from rtb.detection.detector import RegionDetector, check_image, detection_rgb
from rtb.detection.extra import EXTRA, require_extra
from rtb.detection.regions import Detection, grow_box, regions_mask

__all__ = [
    "EXTRA",
    "KINDS",
    "DetectConfig",
    "Detection",
    "RegionDetector",
    "check_image",
    "detection_rgb",
    "grow_box",
    "regions_mask",
    "require_extra",
]
