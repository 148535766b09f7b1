"""Detections and the rules that turn them into a protection mask.

A platform protects a region, not a detector's tight box: a face box from a detector runs from the brows to
the chin, so it is grown upwards to cover the hair, downwards to the chin and neck line and sideways to the
ears; a text box hugs the glyphs, so it is grown by a margin on every side (an inpainter asked to rewrite a
caption would otherwise keep the anti-aliased rim). The mask is the union over the grown boxes, clipped to
the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rtb.detection.config import KINDS, DetectConfig


@dataclass(frozen=True)
class Detection:
    """One region found in an image.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the upright image (EXIF orientation applied), half-open:
    the region is ``x0 <= x < x1``, ``y0 <= y < y1``, with ``0 <= x0 < x1 <= width`` and the same for y.
    """

    # "face" or "text" (text lines, captions, signatures, watermarks).
    kind: str
    # (x0, y0, x1, y1): the detector's own box, before the growth rules of `grow_box`.
    box: tuple[int, int, int, int]
    # The detector's confidence in [0, 1] (the SSD's class score for faces, the mean text probability inside
    # the box for text).
    score: float
    # Which detector found it and its version (the package and model that produced the box).
    detector: str
    detector_version: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"detection kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        x0, y0, x1, y1 = self.box
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"detection box must have x0 < x1 and y0 < y1; got {self.box!r}")


def grow_box(detection: Detection, width: int, height: int, config: DetectConfig) -> tuple[int, int, int, int]:
    """The region a detection protects: its box grown by the rules of ``config``, clipped to the image.

    Faces grow by ``face_grow_side`` × box width left and right, ``face_grow_top`` × box height up and
    ``face_grow_bottom`` × box height down. Text grows by ``max(text_margin × line height,
    text_margin_min)`` pixels on every side, where the line height is the box's shorter side (a vertical
    line of text is as tall as it is wide). Returned as integer ``(x0, y0, x1, y1)`` rounded outwards.
    """
    x0, y0, x1, y1 = detection.box
    box_width, box_height = x1 - x0, y1 - y0
    if detection.kind == "face":
        left = right = config.face_grow_side * box_width
        top = config.face_grow_top * box_height
        bottom = config.face_grow_bottom * box_height
    else:
        left = right = top = bottom = max(config.text_margin * min(box_width, box_height), config.text_margin_min)
    return (
        max(0, math.floor(x0 - left)),
        max(0, math.floor(y0 - top)),
        min(width, math.ceil(x1 + right)),
        min(height, math.ceil(y1 + bottom)),
    )


def regions_mask(detections: list[Detection], width: int, height: int, config: DetectConfig) -> np.ndarray:
    """The protection mask of an image: the union of the grown boxes of ``detections``.

    Returns a boolean ``height × width`` array (True = protected); all False when there is no detection.
    """
    if width < 1 or height < 1:
        raise ValueError(f"mask size must be positive, got {width}×{height}")
    mask = np.zeros((height, width), dtype=bool)
    for detection in detections:
        x0, y0, x1, y1 = grow_box(detection, width, height, config)
        mask[y0:y1, x0:x1] = True
    return mask
