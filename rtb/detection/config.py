"""The configuration of region detection: what to look for, how sure to be, and how a box becomes a mask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# What the detectors find: faces, and text lines (captions, signatures, watermarks).
KINDS = ("face", "text")


@dataclass(frozen=True)
class DetectConfig:
    """Everything that shapes the detections and the mask of an image besides the image itself.

    The defaults are the ones measured in ``docs/detection.md`` (``python benchmarks/detection.py``).
    """

    # What to look for: a non-empty subset of ("face", "text"), in any order. "text" covers printed lines,
    # captions, watermarks and (less reliably, see docs/detection.md) handwritten signatures.
    kinds: tuple[str, ...] = ("face", "text")
    # Faces: the least SSD class score (0–1) that counts as a face. On the labelled set (docs/detection.md)
    # 0.6 finds 95 % of faces of 32 px and up at 0.4 % false face area; 0.7 finds 93 % and 0.8 89 %, with no
    # false face there.
    # A cat's face, the moon and some letters score 0.6–0.7: a higher value trades recall for fewer of those.
    face_score: float = 0.6
    # Faces: the longest side (pixels) of the finest level of the SSD's image pyramid. The SSD finds faces of
    # about 20–315 pixels of its input; the image is seen at its own size (shrunk to at most this), then
    # halved down to ~300 px, so faces from ~32 px up to the whole image are found. A larger image is shrunk
    # first, and its faces smaller than ~32 × (its side / this) px are missed.
    face_max_side: int = 2048
    # Faces: growth of the detected box, as fractions of its width (each side) and height (above, below),
    # so the mask covers the hair, the ears and the chin: the SSD's box runs from the brows to the chin.
    face_grow_side: float = 0.25
    face_grow_top: float = 0.5
    face_grow_bottom: float = 0.2
    # Text: path of a PP-OCR DB text-detection ONNX file to use instead of the PP-OCRv6 small model inside the
    # rapidocr wheel (None). It must take the same input (BGR, (x/255 − 0.5)/0.5, sides multiple of 32).
    text_model: str | None = None
    # Text: the DB probability (0–1) above which a pixel belongs to text, and the least mean probability
    # inside a box (0–1) for the box to count (PP-OCR's own defaults: 0.3 and 0.5).
    text_pixel_score: float = 0.3
    text_score: float = 0.5
    # Text: how far (× the box's size) PP-OCR expands the shrunk text kernels back to a line (its default 1.6).
    text_unclip: float = 1.6
    # Text: the text detector works at the image's own size, shrunk so its longest side is at most
    # `text_max_side` pixels, or enlarged so its shortest side is at least `text_min_side` (0 = never
    # enlarged). 736 is PP-OCR's own default: on a 512² image it lifts 50 %-opaque text from 0.80 to 0.87
    # recall and faint (25 %) text from 0.63 to 0.84, for 2–2.5× the time. Sides are then rounded to multiples
    # of 32 (the DB network's stride). Text lower than ~6 px at the working size is missed.
    text_max_side: int = 1536
    text_min_side: int = 736
    # Text: a detected quadrilateral whose long side is less than `text_blob_aspect` × its short side and
    # which covers more than `text_blob_area` of the image is dropped: PP-OCRv6's probability map floods
    # smooth areas (gradients, colour wheels, blurred photos) into square blobs up to the whole image, while
    # a text line is long and thin. A short word in huge letters (e.g. "OK" over a fifth of the image) is
    # dropped too. text_blob_aspect = 0 keeps every box.
    text_blob_aspect: float = 1.5
    text_blob_area: float = 0.01
    # Text: a quadrilateral whose short side (the line height) exceeds this fraction of the image's short side
    # is dropped: no caption or watermark line here is taller than ~0.2 of the image, while the probability
    # map's floods over large shapes and out-of-focus areas are. 1 keeps every box.
    text_max_line: float = 0.35
    # Text: margin added on every side of a text box, as a fraction of the line height, and at least
    # `text_margin_min` pixels.
    text_margin: float = 0.25
    text_margin_min: int = 3
    # Threads of each detector (ONNX Runtime intra-op threads, OpenCV's thread pool). One actor per core
    # is the intended layout: keep 1 unless an actor owns several cores. Never more than the actor's cores.
    threads: int = 1
    # Largest image accepted, in pixels (width × height); larger ones raise ValueError naming their size.
    max_pixels: int = 64_000_000
    # Smallest side accepted, in pixels (rtb.images.MIN_SIDE: the protection needs this much too).
    min_side: int = 16

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        if not kinds or any(kind not in KINDS for kind in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}; got {self.kinds!r}")
        for name in ("face_score", "text_pixel_score", "text_score"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
        for name in ("face_grow_side", "face_grow_top", "face_grow_bottom", "text_margin"):
            value = getattr(self, name)
            if not (0.0 <= value <= 5.0):
                raise ValueError(f"{name} must be in [0, 5]; got {value!r}")
        if self.face_max_side < 64:
            raise ValueError(f"face_max_side must be at least 64 pixels; got {self.face_max_side!r}")
        if self.text_max_side < 64:
            raise ValueError(f"text_max_side must be at least 64 pixels; got {self.text_max_side!r}")
        if self.text_min_side < 0 or self.text_min_side > self.text_max_side:
            raise ValueError(f"text_min_side must be in [0, text_max_side]; got {self.text_min_side!r}")
        if self.text_blob_aspect < 0 or not (0.0 <= self.text_blob_area <= 1.0):
            raise ValueError(
                f"text_blob_aspect must be >= 0 and text_blob_area in [0, 1]; got {self.text_blob_aspect!r}, "
                f"{self.text_blob_area!r}"
            )
        if self.text_model is not None and not Path(self.text_model).is_file():
            raise ValueError(f"text_model {self.text_model!r} is not a file")
        if not (0.0 < self.text_max_line <= 1.0):
            raise ValueError(f"text_max_line must be in (0, 1]; got {self.text_max_line!r}")
        if self.text_unclip <= 0:
            raise ValueError(f"text_unclip must be positive; got {self.text_unclip!r}")
        if self.text_margin_min < 0:
            raise ValueError(f"text_margin_min must be non-negative; got {self.text_margin_min!r}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be a positive integer; got {self.threads!r}")
        if self.max_pixels < 1 or self.min_side < 1:
            raise ValueError(f"max_pixels and min_side must be positive; got {self.max_pixels!r}, {self.min_side!r}")
