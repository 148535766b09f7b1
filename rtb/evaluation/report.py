"""Dataset-level results of an evaluation: ``summary.json``, PNG contact sheets and a self-contained ``report.html``.

The report links only files next to it (``sheets/*.png``), has no external resource and opens offline.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict

import numpy as np

from rtb.evaluation.masks import FAMILIES, family_kind
from rtb.metrics import GOALS as THRESHOLDS

# Metrics summarised per (arm, family), in report order.
METRICS = ("hole_ssim", "hole_psnr", "full_ssim", "full_psnr", "target_distance", "clean_target_distance",
           "protect_psnr", "protect_ssim", "protect_linf", "protect_delta_e_mean", "protect_delta_e_p95",
           "protect_delta_e_above_jnd", "protect_grey_preserved")
# PSNR of identical images is infinite; summaries cap it here so medians and quartiles stay numbers.
PSNR_CAP = 100.0
# The goals the efficacy is stated on: (label, arm, family, metric, comparison, threshold), on medians; the
# thresholds are rtb.metrics.GOALS.
GOALS = (
    ("exact hole-SSIM (RTB)", "protected", "exact", "hole_ssim", "<=", THRESHOLDS.malicious_hole_ssim),
    ("exact hole-SSIM (noise)", "control", "exact", "hole_ssim", ">=", THRESHOLDS.control_hole_ssim),
    ("elsewhere full-SSIM", "protected", "elsewhere", "full_ssim", ">=", THRESHOLDS.benign_full_ssim),
    ("ring-half full-SSIM", "protected", "ring-half", "full_ssim", ">=", THRESHOLDS.benign_full_ssim),
    ("protected vs source PSNR", "protected", "exact", "protect_psnr", ">=", THRESHOLDS.protect_psnr),
    ("protected vs source ΔE00 p95", "protected", "exact", "protect_delta_e_p95", "<=", THRESHOLDS.delta_e_p95),
)


def _finite(name: str, value) -> float | None:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value) and name.endswith("psnr"):
        return PSNR_CAP
    return value


def summarize(rows: list[dict]) -> dict:
    """Per arm and mask family: N (edits), images, and median / first / third quartile of every metric.

    Only rows with ``status == "ok"`` count; ``errors`` gives the number of error rows per arm and
    ``skipped_holes`` the holes per family that found no room (status ``skipped``, e.g. ``elsewhere`` on a
    small image).
    Returns ``{"arms": {arm: {family: {"kind", "N", "images", "metrics": {metric: {"median", "q1", "q3"}}}}},
    "errors": {arm: n}, "skipped_holes": {family: n}}``; families appear in :data:`FAMILIES` order.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    skipped: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.get("status") == "skipped":
            skipped[row.get("family")] += 1
            continue
        if row.get("status") != "ok":
            errors[row.get("arm") or "protected"] += 1
            continue
        groups[(row["arm"], row["family"])].append(row)
    arms: dict[str, dict] = {}
    for arm in sorted({arm for arm, _ in groups}, key=lambda a: (a != "protected", a)):
        arms[arm] = {}
        for family in FAMILIES:
            members = groups.get((arm, family))
            if not members:
                continue
            stats = {}
            for metric in METRICS:
                values = np.array([v for v in (_finite(metric, r.get(metric)) for r in members) if v is not None])
                if values.size == 0:
                    continue
                q1, median, q3 = np.percentile(values, [25, 50, 75])
                stats[metric] = {"median": float(median), "q1": float(q1), "q3": float(q3)}
            arms[arm][family] = {"kind": family_kind(family), "N": len(members),
                                 "images": len({r["id"] for r in members}), "metrics": stats}
    return {"arms": arms, "errors": dict(errors), "skipped_holes": dict(skipped)}


def summarize_transforms(rows: list[dict], transforms: list[str]) -> dict[str, dict]:
    """:func:`summarize` per transform (in ``transforms`` order), from rows with a ``transform`` column.

    Rows whose ``transform`` is None (an image that could not be evaluated at all) count under every transform.
    """
    return {t: summarize([r for r in rows if r.get("transform") in (t, None)]) for t in transforms}


def median(summary: dict, arm: str, family: str, metric: str) -> float | None:
    """The median of ``metric`` for (arm, family) in a :func:`summarize` result; None when not measured."""
    return summary.get("arms", {}).get(arm, {}).get(family, {}).get("metrics", {}).get(metric, {}).get("median")


def goals(summary: dict) -> list[dict]:
    """Each of :data:`GOALS` on a :func:`summarize` result: ``{"label", "goal", "median", "met"}``."""
    out = []
    for label, arm, family, metric, op, threshold in GOALS:
        value = median(summary, arm, family, metric)
        met = value is not None and (value <= threshold if op == "<=" else value >= threshold)
        out.append({"label": label, "goal": f"{op} {threshold:g}", "median": value, "met": met})
    return out


def worst_transform(per_transform: dict[str, dict]) -> str:
    """The transform under which the protection is weakest: the highest median exact hole-SSIM of the
    protected arm (the first listed on ties, or when none was measured)."""
    names = list(per_transform)
    scored = [(median(per_transform[t], "protected", "exact", "hole_ssim"), -i, t) for i, t in enumerate(names)]
    scored = [item for item in scored if item[0] is not None]
    return max(scored)[2] if scored else names[0]


# ----------------------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; } td.l { text-align: left; }
tr.malicious td.l { color: #a00; } tr.benign td.l { color: #060; }
figure { margin: 1em 0; } img { max-width: 100%; image-rendering: pixelated; }
.note { color: #555; font-size: 0.9em; }
"""

# Marks every image's load state on the <html> element, so a headless browser's DOM dump can be checked.
_SCRIPT = """
function rtbMark() {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var loaded = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute('data-loaded', loaded ? 'yes' : 'no');
    if (loaded) ok++;
  }
  document.documentElement.setAttribute('data-images', ok + '/' + imgs.length);
}
window.addEventListener('load', rtbMark);
"""


def _cell(stats: dict, metric: str) -> str:
    if metric not in stats:
        return "<td>–</td>"
    s = stats[metric]
    digits = 1 if metric.endswith("psnr") else 3
    return (f"<td>{s['median']:.{digits}f} <span class=note>[{s['q1']:.{digits}f}, {s['q3']:.{digits}f}]</span></td>")


def _per_transform(summary: dict) -> dict[str, dict]:
    """``summary["transforms"]``, or the summary itself as the one transform ``none`` (older summaries)."""
    return summary.get("transforms") or {"none": summary}


def goals_table(summary: dict) -> str:
    """The goals as an HTML table: one row per goal, one column per transform (median, ✓ when met)."""
    per_transform = _per_transform(summary)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in per_transform)
    results = {t: goals(s) for t, s in per_transform.items()}
    body = []
    for i, (label, *_rest) in enumerate(GOALS):
        cells = []
        for t in per_transform:
            goal = results[t][i]
            if goal["median"] is None:
                cells.append("<td>–</td>")
                continue
            digits = 1 if "PSNR" in label else 3
            cells.append(f"<td>{goal['median']:.{digits}f} {'✓' if goal['met'] else '✗'}</td>")
        body.append(f"<tr><td class=l>{html.escape(label)}</td><td class=l>{html.escape(results[next(iter(results))][i]['goal'])}"
                    f"</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>goal (median)</th><th>target</th>{head}</tr>{''.join(body)}</table>"


def summary_table(summary: dict) -> str:
    """The summary as an HTML table: one row per (transform, arm, family), median [q1, q3] per metric."""
    metrics = ("hole_ssim", "hole_psnr", "full_ssim", "full_psnr", "target_distance", "clean_target_distance", "protect_psnr",
               "protect_delta_e_p95", "protect_grey_preserved")
    head = "".join(f"<th>{m}</th>" for m in ("transform", "arm", "family", "kind", "N", "images", *metrics))
    body = []
    for transform, per in _per_transform(summary).items():
        for arm, families in per.get("arms", {}).items():
            for family, entry in families.items():
                cells = "".join(_cell(entry["metrics"], m) for m in metrics)
                body.append(f"<tr class={entry['kind']}><td class=l>{html.escape(transform)}</td>"
                            f"<td class=l>{html.escape(arm)}</td><td class=l>{family}</td><td class=l>{entry['kind']}</td>"
                            f"<td>{entry['N']}</td><td>{entry['images']}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_html(summary: dict, sheets: list[tuple[str, str]], meta: dict, crops: list[tuple[str, str]] = ()) -> str:
    """The report page. ``sheets``: ``(image id, relative path of its contact sheet)``; ``meta``: run facts;
    ``crops``: ``(image id, relative path of its flattest-region crop)``."""
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in meta.items())
    fid = summary.get("clip_fid") or {"skipped": "not computed"}
    if fid.get("skipped"):
        fid_html = f"<p class=note>CLIP-FID: skipped — {html.escape(fid['skipped'])}</p>"
    else:
        by_transform = fid.get("transforms") or {"none": fid.get("arms", {})}
        items = "".join(
            f"<li>{html.escape(t)} / {html.escape(arm)} / {html.escape(fam)}: {v['fid']:.2f} (N = {v['N']})</li>"
            for t, arms in by_transform.items() for arm, fams in arms.items() for fam, v in fams.items()
        )
        fid_html = f"<p>CLIP-FID, clean edits vs edits of the arm (biased below ~500 images):</p><ul>{items}</ul>"
    transform = summary.get("worst_transform", "none")
    sheets_note = ("Per image: one malicious (exact) and one benign (ring-half) hole, outlined in yellow." if len(
        _per_transform(summary)) == 1 else f"Transform <b>{html.escape(transform)}</b>, the one under which the "
        "protection is weakest (highest median exact hole-SSIM): the source and the protected image after it, and "
        "one malicious (exact) and one benign (ring-half) hole, outlined in yellow.")
    figures = "".join(
        f"<figure><img src=\"{html.escape(path)}\" alt=\"{html.escape(image_id)}\">"
        f"<figcaption>{html.escape(image_id)}</figcaption></figure>"
        for image_id, path in sheets
    )
    crop_figures = "".join(
        f"<figure><img src=\"{html.escape(path)}\" alt=\"{html.escape(image_id)} (flattest region)\">"
        f"<figcaption>{html.escape(image_id)}</figcaption></figure>"
        for image_id, path in crops
    )
    crops_html = ("<h2>Flattest regions</h2><p class=note>Where a perturbation shows first: each image's flattest "
                  "48×48 window, zoomed 4×: source | protected | |δ| × 20 (per channel: a colour cast shows as "
                  f"colour).</p>{crop_figures}") if crops else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rtb evaluation</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head>
<body>
<h1>rtb evaluation</h1>
<ul>{facts}</ul>
<h2>Goals</h2>
<p class=note>Medians over edits, one column per transform of the images before the edit (none = as stored).</p>
{goals_table(summary)}
<h2>Summary</h2>
<p class=note>Edits of the protected (or control) image against the same edit of the clean image, same hole and
seed, after the same transform (a real JPEG/WebP re-encode, a down-and-up resize; none = as stored). SSIM: Gaussian 11/1.5 on RGB in [0, 1]; PSNR: data range 1 (capped at {PSNR_CAP:g} dB); target_distance:
mean RGB distance of the hole to the target colour / √3. Cells: median [first quartile, third quartile].
Malicious holes should give low hole SSIM and low target distance; benign holes full SSIM near 1.</p>
{summary_table(summary)}
<p class=note>Holes that found no room (not measured): {html.escape(str(summary.get("skipped_holes") or "none"))};
images that could not be evaluated: {html.escape(str(summary.get("errors") or "none"))}.</p>
{fid_html}
<h2>Contact sheets</h2>
<p class=note>{sheets_note}</p>
{figures}
{crops_html}
</body></html>
"""
