"""The held-out catalog: deterministic, masks of 3–15 %, no photo the reference model trains on."""

from __future__ import annotations

import numpy as np
from PIL import Image

from rtb import catalog
from rtb_train.heldout import COLOUR_PHOTOS, GREY_PHOTOS, make_heldout
from rtb_train.data import TRAIN_SKIMAGE


def test_heldout_is_deterministic_and_well_formed(tmp_path):
    ids = make_heldout(tmp_path / "a", count=5, size=64)
    again = make_heldout(tmp_path / "b", count=5, size=64)
    assert ids == again and len(set(ids)) == 5
    for i in ids:
        for suffix in (".png", "_mask.png", ".txt"):
            assert (tmp_path / "a" / f"{i}{suffix}").read_bytes() == (tmp_path / "b" / f"{i}{suffix}").read_bytes()
        mask = np.asarray(Image.open(tmp_path / "a" / f"{i}_mask.png")) > 0
        assert 0.03 <= mask.mean() <= 0.15 and Image.open(tmp_path / "a" / f"{i}.png").size == (64, 64)
    rows = catalog.list_pairs(catalog.list_files(str(tmp_path / "a")))
    assert [r["id"] for r in rows] == sorted(ids) and all(r["read_error"] is None for r in rows)
    assert not set(TRAIN_SKIMAGE) & (set(GREY_PHOTOS) | set(COLOUR_PHOTOS))
