"""RegionDetector with the real detectors (OpenCV's res10 SSD, PP-OCR through RapidOCR) on the bundled samples."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rtb.detection import DetectConfig, RegionDetector, detection_rgb, regions_mask
from rtb.images import decode_image
from tests.fixtures.detection import coverage, detection_samples, iou


@pytest.fixture(scope="module")
def detector():
    return RegionDetector(DetectConfig(threads=1))


@pytest.fixture(scope="module")
def samples():
    return detection_samples()


def faces_of(detections):
    return [d for d in detections if d.kind == "face"]


def assert_finds(detector, image, regions):
    """Every true face has a detection overlapping it (IoU ≥ 0.6) and its mask covers it; every true text line
    is covered by the text mask; nothing else is a face."""
    detections = detector.detect(image)
    text_mask = regions_mask([d for d in detections if d.kind == "text"], *image.size, detector.config)
    mask = detector.mask(image, detections)
    true_faces = [r["box"] for r in regions if r["kind"] == "face"]
    assert len(faces_of(detections)) == len(true_faces)
    for box in true_faces:
        assert max(iou(d.box, box) for d in faces_of(detections)) >= 0.6
        assert coverage(mask, box) == 1.0
    for region in regions:
        if region["kind"] == "text":
            assert coverage(text_mask, region["box"]) >= 0.95, region["text"]
    return detections, mask


def test_finds_the_known_faces_and_text_of_the_bundled_samples(detector, samples):
    for name in ("portrait_caption.jpg", "cameraman_credit.jpg"):
        sample = samples[name]
        detections, mask = assert_finds(detector, sample["image"], sample["regions"])
        width, height = sample["image"].size
        assert mask.shape == (height, width) and mask.dtype == bool
        # The protected area is the regions, not the photo: under a quarter of the image here.
        assert 0.02 < mask.mean() < 0.25, name
        for detection in detections:
            x0, y0, x1, y1 = detection.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert 0.0 <= detection.score <= 1.0
            assert detection.detector == ("opencv-res10-ssd" if detection.kind == "face" else "rapidocr-ppocr-det")
            assert ("opencv" if detection.kind == "face" else "onnxruntime") in detection.detector_version


def test_a_photo_without_faces_or_text_gives_no_region(detector, samples):
    image = samples["rocket.jpg"]["image"]
    detections = detector.detect(image)
    assert detections == []
    assert not detector.mask(image, detections).any()


def test_face_mask_reaches_above_the_box_for_the_hair(detector, samples):
    sample = samples["portrait_caption.jpg"]
    detections = detector.detect(sample["image"])
    x0, y0, x1, y1 = faces_of(detections)[0].box
    mask = detector.mask(sample["image"], detections)
    hair = (x0, max(0, y0 - (y1 - y0) // 3), x1, y0)  # a third of the face height above the box
    assert coverage(mask, hair) == 1.0
    assert not mask[: max(0, y0 - (y1 - y0)), :].any()  # but not the whole sky


def test_grey_rgba_palette_and_16_bit_inputs(detector, samples):
    colour = samples["portrait_caption.jpg"]
    rgb = colour["image"]
    reference = detector.detect(rgb)
    # RGBA: alpha is set aside, as the protection does; the RGB content is the same, so are the detections.
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    assert detector.detect(rgba) == reference
    # Palette (256 colours) and 8-bit grey: the same face and caption.
    assert_finds(detector, rgb.quantize(256), colour["regions"])
    grey = rgb.convert("L")
    grey_detections, _ = assert_finds(detector, grey, colour["regions"])
    # 16-bit grey (I;16 and 32-bit I), as a 16-bit PNG decodes: scaled to 8 bits, not clipped to white.
    levels = np.asarray(grey, dtype=np.uint16) * 257
    wide = Image.fromarray(levels)
    assert wide.mode == "I;16"
    assert np.array_equal(detection_rgb(wide), detection_rgb(grey))
    assert detector.detect(wide) == grey_detections
    png = io.BytesIO()
    wide.save(png, format="PNG")  # a 16-bit greyscale PNG; Pillow decodes it as I;16 or I
    decoded = decode_image(png.getvalue())
    assert decoded.mode.startswith("I")
    assert detector.detect(decoded) == grey_detections


def test_exif_orientation_applied_by_decode_image_gives_upright_boxes(detector, samples):
    sample = samples["portrait_caption.jpg"]
    upright = sample["image"]
    # Stored turned 90° counter-clockwise with EXIF orientation 6 ("rotate 90° clockwise to display").
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = io.BytesIO()
    stored.save(data, format="JPEG", quality=95, exif=exif)
    image = decode_image(data.getvalue())
    assert image.size == upright.size
    assert_finds(detector, image, sample["regions"])


def test_a_small_face_in_a_large_image_is_seen_at_full_resolution(detector, samples):
    sample = samples["portrait_caption.jpg"]
    # The 384 px portrait (a 70 px face) in a 1600×1200 canvas: at the SSD's own 300 px it would be 13 px.
    large = Image.new("RGB", (1600, 1200), (90, 110, 130))
    large.paste(sample["image"], (900, 500))
    # Faces only: PP-OCR floods a photo lying on a flat page, caption included (docs/detection.md).
    regions = [
        {**r, "box": (r["box"][0] + 900, r["box"][1] + 500, r["box"][2] + 900, r["box"][3] + 500)}
        for r in sample["regions"]
        if r["kind"] == "face"
    ]
    assert_finds(detector, large, regions)


def test_detection_is_deterministic(detector, samples):
    image = samples["cameraman_credit.jpg"]["image"]
    first, second = detector.detect(image), detector.detect(image)
    assert first == second and len(first) >= 2
    again = RegionDetector(DetectConfig(threads=1)).detect(image)
    assert again == first
    assert np.array_equal(detector.mask(image, first), detector.mask(image, again))


def test_kinds_choose_the_detectors(samples):
    image = samples["portrait_caption.jpg"]["image"]
    text_only = RegionDetector(DetectConfig(kinds=("text",))).detect(image)
    assert text_only and {d.kind for d in text_only} == {"text"}
    faces_only = RegionDetector(DetectConfig(kinds=("face",))).detect(image)
    assert len(faces_only) == 1 and faces_only[0].kind == "face"


def test_empty_tiny_and_huge_images_raise_naming_the_size(detector):
    with pytest.raises(ValueError, match="0×0"):
        detector.detect(Image.new("RGB", (0, 0)))
    with pytest.raises(ValueError, match="8×300"):
        detector.detect(Image.new("RGB", (8, 300)))
    with pytest.raises(ValueError, match="9000×8000 = 72000000 pixels"):
        detector.detect(Image.new("1", (9000, 8000)))
    with pytest.raises(ValueError, match="2000×2000"):
        RegionDetector(DetectConfig(kinds=("text",), max_pixels=1_000_000)).detect(Image.new("RGB", (2000, 2000)))
    with pytest.raises(ValueError, match="bytes"):
        detector.detect(b"\x89PNG")
