"""Incremental nightly runs: what a second night costs after 5 % of the catalog changed and 5 % was added.

    python benchmarks/nightly.py --images 200 --size 128 --steps 10 [--memory]

1. Builds a pairs catalog of N procedural catalog images (``rtb_train.data.procedural_image``, never the
   held-out set) with rectangle masks.
2. Night 1: ``python jobs/protect.py`` protects all of it (a fresh process with its own local Ray, as a
   scheduled run is).
3. Changes the image bytes of 5 % of the ids, adds 5 % new ids; night 2 with a new run id.
4. Prints both nights' wall times (from their manifests, Ray start-up included), the share of rows night 2
   recomputed, and whether they are exactly the changed and added ids.
5. With ``--memory``: the driver's peak resident memory (VmHWM) over both nights, for N and for 4N images,
   each in its own processes; the driver must not grow with the catalog.

Last line: ``incremental: X.XX`` (night 2 wall time / night 1 wall time).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rtb_train.data import procedural_image  # noqa: E402


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_pair(folder: Path, name: str, seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    image = (procedural_image(rng, size) * 255).round().astype(np.uint8)
    mask = Image.new("L", (size, size), 0)
    x0, y0 = (int(v) for v in rng.integers(0, size // 2, size=2))
    ImageDraw.Draw(mask).rectangle((x0, y0, x0 + size // 4, y0 + size // 5), fill=255)
    (folder / f"{name}.png").write_bytes(png(image))
    mask.save(folder / f"{name}_mask.png")


def peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    """Poll VmHWM (peak resident set) of ``pid`` until it exits."""
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out.append(int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.25)


def night(catalog: Path, output: Path, run_id: str, args) -> tuple[dict, int]:
    """One scheduled run in a fresh process; returns (manifest, driver peak RSS in bytes)."""
    command = [sys.executable, "jobs/protect.py", "--input", str(catalog), "--output", str(output),
               "--model", args.model, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--run-id", run_id, "--format", "pairs"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, peaks = threading.Event(), []
    watcher = threading.Thread(target=peak_rss, args=(process.pid, stop, peaks), daemon=True)
    watcher.start()
    stdout, stderr = process.communicate()
    stop.set()
    if process.returncode != 0:
        raise SystemExit(f"{run_id} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return json.loads((output / "runs" / f"{run_id}.json").read_text()), max(peaks or [0])


def two_nights(count: int, args, root: Path) -> dict:
    """Night 1 on ``count`` images, 5 % changed and 5 % added, night 2; what each cost."""
    catalog, output = root / f"catalog-{count}", root / f"out-{count}"
    catalog.mkdir(parents=True)
    for i in range(count):
        write_pair(catalog, f"img{i:05d}", i, args.size)
    first, first_rss = night(catalog, output, "night-1", args)
    # Change 5 % of the images (new bytes under the same id) and add 5 % new ids.
    rng = np.random.default_rng(1)
    share = max(1, round(0.05 * count))
    changed = sorted(f"img{i:05d}" for i in rng.choice(count, size=share, replace=False))
    for name in changed:
        write_pair(catalog, name, 10_000_000 + int(name[3:]), args.size)
    added = [f"img{i:05d}" for i in range(count, count + share)]
    for i, name in enumerate(added):
        write_pair(catalog, name, count + i, args.size)
    second, second_rss = night(catalog, output, "night-2", args)
    recomputed = sorted(
        row for path in (output / "metrics").glob("night-2-a*.parquet")
        for row in pq.read_table(path).column("id").to_pylist()
    )
    return {"first": first, "second": second, "rss": max(first_rss, second_rss), "recomputed": recomputed,
            "expected": sorted(changed + added), "rows": count + share}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="reference")
    parser.add_argument("--memory", action="store_true", help="Also run N and 4N and compare the driver's peak memory.")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="rtb-nightly-") as tmp:
        result = two_nights(args.images, args, Path(tmp))
        first, second = result["first"], result["second"]
        print(f"night 1: {first['counts']['protected']} protected in {first['wall_seconds']:.1f} s "
              f"(pipeline {first['pipeline_seconds']:.1f} s)")
        print(f"night 2: {second['counts']['protected']} protected, {second['counts']['unchanged']} unchanged "
              f"in {second['wall_seconds']:.1f} s (pipeline {second['pipeline_seconds']:.1f} s)")
        share = len(result["recomputed"]) / result["rows"]
        exact = result["recomputed"] == result["expected"]
        print(f"night 2 recomputed {len(result['recomputed'])} of {result['rows']} rows ({share:.1%}); "
              f"exactly the changed and added ids: {exact}")
        if args.memory:
            big = two_nights(4 * args.images, args, Path(tmp))
            print(f"driver peak memory: N={args.images}: {result['rss'] / 2**20:.0f} MiB, "
                  f"4N={4 * args.images}: {big['rss'] / 2**20:.0f} MiB (ratio {big['rss'] / result['rss']:.2f})")
        print(f"incremental: {second['wall_seconds'] / first['wall_seconds']:.2f}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
