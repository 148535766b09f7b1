"""``RegionDetector``: faces and text lines of an image, and the protection mask they make.

One instance per actor: it loads the detectors once, with their thread counts set explicitly, and is then
called on decoded images (``rtb.images.decode_image`` applies the EXIF orientation; pass its result).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from rtb import images as imaging
from rtb.detection.config import DetectConfig
from rtb.detection.extra import require_extra
from rtb.detection.regions import Detection, regions_mask

def check_image(image: Image.Image, config: DetectConfig) -> None:
    """Raise ``ValueError`` naming the value when ``image`` cannot be searched (before any compute)."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image (rtb.images.decode_image), got {type(image).__name__}")
    width, height = image.size
    if min(width, height) < config.min_side:
        raise ValueError(f"image is {width}×{height}; at least {config.min_side}×{config.min_side} is needed")
    if width * height > config.max_pixels:
        raise ValueError(
            f"image is {width}×{height} = {width * height} pixels; at most {config.max_pixels} are searched"
        )


def detection_rgb(image: Image.Image) -> np.ndarray:
    """The 8-bit RGB pixels detectors see: ``H×W×3`` uint8 — the RGB content the protection perturbs
    (:func:`rtb.images.split_alpha`: wide grey brought to 8 bits as a viewer shows it, alpha set aside, palette and
    grey expanded)."""
    rgb, _ = imaging.split_alpha(image)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


class RegionDetector:
    """Finds the regions to protect (faces, text lines) and turns them into a mask.

    Build it once per actor: ``RegionDetector(DetectConfig(kinds=("face", "text"), threads=1))`` loads the
    detectors the kinds need (``ImportError`` naming the extra ``rtb[detect]`` when it is not installed) and
    sets their thread counts (ONNX Runtime's intra-op threads, OpenCV's thread pool) to ``config.threads``.
    Results are deterministic: the same image gives the same detections, call after call.
    """

    def __init__(self, config: DetectConfig | None = None) -> None:
        self.config = config if config is not None else DetectConfig()
        # 1. Fail at start, with the extra's name, when a detector package is missing.
        require_extra(self.config.kinds)
        # 2. Load one detector per kind.
        self._faces = self._text = None
        if "face" in self.config.kinds:
            from rtb.detection.faces import FaceDetector

            self._faces = FaceDetector(self.config)
        if "text" in self.config.kinds:
            from rtb.detection.text import TextDetector

            self._text = TextDetector(self.config)

    def describe(self) -> str:
        """The detectors and their versions, e.g. for a manifest."""
        return "; ".join(f"{d.name} {d.version}" for d in (self._faces, self._text) if d is not None)

    def detect(self, image: Image.Image) -> list[Detection]:
        """Faces, then text lines, of ``image`` (a decoded, upright PIL image of any mode).

        Boxes are in pixels of ``image``; faces best score first, text lines top to bottom. Raises
        ``ValueError`` naming the size for images smaller than ``min_side`` or larger than ``max_pixels``.
        """
        # 1. Check the input.
        check_image(image, self.config)
        # 2. The 8-bit RGB pixels the detectors see.
        rgb = detection_rgb(image)
        # 3. Each kind asked for.
        detections: list[Detection] = []
        if self._faces is not None:
            detections += self._faces.detect(rgb)
        if self._text is not None:
            detections += self._text.detect(rgb)
        return detections

    def mask(self, image: Image.Image, detections: list[Detection]) -> np.ndarray:
        """The protection mask of ``image``: ``H×W`` bool, the union of the detections' grown boxes.

        Face boxes grow by ``face_grow_side/top/bottom``, text boxes by ``text_margin`` (see
        ``rtb.detection.regions.grow_box``); all False when ``detections`` is empty.
        """
        width, height = image.size
        return regions_mask(detections, width, height, self.config)
