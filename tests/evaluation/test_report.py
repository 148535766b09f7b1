"""Summary statistics, contact sheets and the report page."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from rtb.evaluation.report import PSNR_CAP, summarize, write_html
from rtb.evaluation.sheets import contact_sheet, sheet_name


def rows():
    rng = np.random.default_rng(0)
    out = []
    for i in range(9):
        for arm in ("protected", "control"):
            out.append({"id": f"a/{i}", "arm": arm, "family": "exact", "kind": "malicious", "index": 0,
                        "hole_ssim": float(rng.uniform()), "hole_psnr": float("inf") if i == 0 else 20.0 + i,
                        "full_ssim": 0.9, "full_psnr": 30.0, "target_distance": 0.1, "status": "ok"})
    out.append({"id": "bad", "arm": "protected", "status": "error", "error": "boom"})
    out.append({"id": "small", "arm": "protected", "family": "elsewhere", "status": "skipped"})
    return out


def test_summary_matches_numpy_percentiles():
    data = rows()
    summary = summarize(data)
    exact = summary["arms"]["protected"]["exact"]
    values = [r["hole_ssim"] for r in data if r.get("arm") == "protected" and r.get("status") == "ok"]
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    assert exact["N"] == 9 and exact["images"] == 9 and exact["kind"] == "malicious"
    assert exact["metrics"]["hole_ssim"] == pytest.approx({"median": med, "q1": q1, "q3": q3})
    assert exact["metrics"]["hole_psnr"]["q3"] <= PSNR_CAP  # inf is capped, not propagated
    assert summary["errors"] == {"protected": 1} and summary["skipped_holes"] == {"elsewhere": 1}
    assert list(summary["arms"]) == ["protected", "control"]


def test_contact_sheet_and_page_are_self_contained():
    source = torch.rand(3, 40, 48, dtype=torch.float64)
    hole = torch.zeros(40, 48)
    hole[10:20, 10:30] = 1
    edits = {"clean": source, "protected": 1 - source, "hole": hole}
    sheet = contact_sheet(source, source, [("malicious: exact", edits), ("benign: ring-half", edits)])
    assert sheet.mode == "RGB" and sheet.height >= 2 * 40 and sheet.width >= 5 * 48
    page = write_html(summarize(rows()), [("a/0", f"sheets/{sheet_name('a/0')}")], {"images": 9})
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links == ["sheets/a__0.png"]
    assert "http" not in page.replace("http-equiv", "") and "data-loaded" in page
    assert "skipped" in page  # no CLIP-FID given


def transform_rows():
    """Rows of two transforms: the protection holds under none (0.3) and fades under jpeg:75 (0.9)."""
    out = []
    for transform, value in (("none", 0.3), ("jpeg:75", 0.9)):
        for i in range(3):
            for arm, ssim in (("protected", value), ("control", 0.99)):
                out.append({"id": f"i{i}", "arm": arm, "transform": transform, "family": "exact", "kind": "malicious",
                            "index": 0, "hole_ssim": ssim + 0.01 * i, "protect_psnr": 33.0, "status": "ok"})
    out.append({"id": "bad", "arm": "protected", "transform": None, "status": "error", "error": "boom"})
    return out


def test_per_transform_summaries_goals_and_the_worst_transform():
    from rtb.evaluation.report import goals, summarize_transforms, worst_transform

    per = summarize_transforms(transform_rows(), ["none", "jpeg:75"])
    assert list(per) == ["none", "jpeg:75"]
    assert per["none"]["arms"]["protected"]["exact"]["metrics"]["hole_ssim"]["median"] == pytest.approx(0.31)
    assert per["jpeg:75"]["arms"]["protected"]["exact"]["metrics"]["hole_ssim"]["median"] == pytest.approx(0.91)
    assert per["none"]["errors"] == per["jpeg:75"]["errors"] == {"protected": 1}  # a failed image fails under both
    assert worst_transform(per) == "jpeg:75"
    assert worst_transform({"none": per["none"], "same": per["none"]}) == "none"  # ties: the first listed
    none_goals = {g["label"]: g for g in goals(per["none"])}
    assert none_goals["exact hole-SSIM (RTB)"]["met"] is False and none_goals["exact hole-SSIM (noise)"]["met"]
    assert none_goals["elsewhere full-SSIM"]["median"] is None and not none_goals["elsewhere full-SSIM"]["met"]

    summary = {**per["none"], "transforms": per, "worst_transform": "jpeg:75"}
    page = write_html(summary, [("i0", f"sheets/{sheet_name('i0', 'jpeg:75')}")], {"images": 3})
    goals_html = page.split("<h2>Goals</h2>", 1)[1].split("<h2>Summary</h2>", 1)[0]
    assert "<th>none</th><th>jpeg:75</th>" in goals_html and "0.310 ✗" in goals_html and "0.910 ✗" in goals_html
    assert re.findall(r'src="([^"]+)"', page) == ["sheets/i0.jpeg-75.png"]
    assert "Transform <b>jpeg:75</b>" in page
    assert sheet_name("a/b") == "a__b.png" and sheet_name("a/b", "resize:0.5") == "a__b.resize-0.5.png"
