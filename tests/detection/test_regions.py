"""Boxes → mask: the growth rules, the union, clipping, and the validation of detections and the config."""

from __future__ import annotations

import pytest

from rtb.detection import DetectConfig, Detection, grow_box, regions_mask
from rtb.detection.faces import pyramid_sizes


def face(box, score=0.9):
    return Detection("face", box, score, "test", "0")


def text(box, score=0.9):
    return Detection("text", box, score, "test", "0")


def test_face_box_grows_up_for_hair_down_for_chin_and_sideways_for_ears():
    config = DetectConfig(face_grow_side=0.25, face_grow_top=0.5, face_grow_bottom=0.2)
    # 40 wide, 50 high: 10 px each side, 25 px above, 10 px below.
    assert grow_box(face((100, 100, 140, 150)), 400, 400, config) == (90, 75, 150, 160)


def test_text_box_grows_by_a_margin_of_its_line_height_with_a_floor():
    config = DetectConfig(text_margin=0.25, text_margin_min=3)
    # A 20 px high line: 5 px on every side.
    assert grow_box(text((10, 20, 110, 40)), 400, 400, config) == (5, 15, 115, 45)
    # A 4 px high line: the 3 px floor.
    assert grow_box(text((10, 20, 110, 24)), 400, 400, config) == (7, 17, 113, 27)
    # A vertical line 20 px wide: its width is its line height.
    assert grow_box(text((10, 10, 30, 200)), 400, 400, config) == (5, 5, 35, 205)


def test_grown_boxes_are_clipped_to_the_image():
    config = DetectConfig()
    assert grow_box(face((0, 0, 40, 50)), 45, 60, config) == (0, 0, 45, 60)
    assert grow_box(text((90, 90, 100, 100)), 100, 100, config) == (87, 87, 100, 100)


def test_mask_is_the_union_of_the_grown_boxes():
    config = DetectConfig(
        face_grow_side=0.0, face_grow_top=0.0, face_grow_bottom=0.0, text_margin=0.0, text_margin_min=0
    )
    detections = [face((10, 10, 30, 30)), face((20, 20, 40, 40)), text((50, 5, 90, 15))]
    mask = regions_mask(detections, width=100, height=60, config=config)
    assert mask.shape == (60, 100) and mask.dtype == bool
    # Two overlapping 20×20 squares (overlap 10×10) and a 40×10 line.
    assert int(mask.sum()) == 400 + 400 - 100 + 400
    assert mask[10:30, 10:30].all() and mask[20:40, 20:40].all() and mask[5:15, 50:90].all()
    assert not mask[45:, :].any()


def test_no_detection_gives_an_empty_mask_of_the_image_size():
    mask = regions_mask([], width=70, height=30, config=DetectConfig())
    assert mask.shape == (30, 70) and not mask.any()
    with pytest.raises(ValueError, match="0×30"):
        regions_mask([], width=0, height=30, config=DetectConfig())


def test_detection_and_config_name_bad_values():
    with pytest.raises(ValueError, match="'logo'"):
        Detection("logo", (0, 0, 1, 1), 1.0, "test", "0")
    with pytest.raises(ValueError, match=r"\(5, 0, 5, 10\)"):
        face((5, 0, 5, 10))
    with pytest.raises(ValueError, match="'logo'"):
        DetectConfig(kinds=("face", "logo"))
    with pytest.raises(ValueError, match="face_score.*1.5"):
        DetectConfig(face_score=1.5)
    with pytest.raises(ValueError, match="threads.*0"):
        DetectConfig(threads=0)
    assert DetectConfig(kinds="text").kinds == ("text",)


def test_face_pyramid_runs_from_the_image_size_down_to_about_300_px():
    assert pyramid_sizes(512, 512, 2048) == [(512, 512)]
    assert pyramid_sizes(1024, 768, 2048) == [(1024, 768), (512, 384)]
    # Larger than face_max_side: shrunk first, then halved.
    assert pyramid_sizes(4000, 3000, 2048) == [(2048, 1536), (1024, 768), (512, 384)]
    assert pyramid_sizes(100, 40, 2048) == [(96, 32)]
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in pyramid_sizes(1234, 987, 2048))
