"""Pipeline efficiency: images/s of the whole Ray Data job vs the bare optimizer loop, and peak memory.

    python benchmarks/pipeline.py --images 16 --size 128 --steps 20 --batch-size 8

1. Builds Parquet catalogs of N and 4N images (the bundled samples, resized to one size so that both sides
   batch identically) and decodes the first N in this process.
2. Bare loop: ``rtb.protect`` on those N decoded images, batch by batch, model loaded once, after a
   one-image warm-up (decode + load + warm-up reported as start-up). Measured before and after the job runs
   and averaged, since the machine may be shared.
3. Job: ``python jobs/protect.py`` on the N and on the 4N catalog, each in a fresh process with its own local
   Ray. Steady-state rate of a run = images written after the first batch / time between the first batch's
   last PNG and the last PNG (file mtimes): every stage's cost is in it, Ray/actor/model start-up is not.
   Start-up = wall − 4N / steady rate. 3N / (T(4N) − T(N)) across the two runs is printed as a cross-check.
4. Peak resident memory (VmHWM from /proc) of the driver and of every Ray worker process of each job run,
   polled every 0.25 s: it must not grow from N to 4N.

Prints ``efficiency: X.XX`` (steady job rate / steady bare rate) as the last line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rtb import ProtectConfig, catalog, load_inpainter, protect  # noqa: E402
from rtb.images import decode_image, decode_mask  # noqa: E402

SAMPLES = REPO / "rtb" / "samples" / "catalog"


def build_catalog(count: int, side: int) -> list[dict]:
    """``count`` catalog rows cycling over the bundled samples, all resized to ``side``×``side``."""
    names = sorted(p.name[: -len("_mask.png")] for p in SAMPLES.glob("*_mask.png"))
    rows = []
    for i in range(count):
        name = names[i % len(names)]
        image = Image.open(SAMPLES / f"{name}.png").convert("RGB").resize((side, side), Image.LANCZOS)
        mask = Image.open(SAMPLES / f"{name}_mask.png").convert("L").resize((side, side), Image.NEAREST)
        # Shift the content a little per copy so no two images are identical.
        image = Image.fromarray(np.roll(np.asarray(image), i, axis=1))
        mask = Image.fromarray(np.roll(np.asarray(mask), i, axis=1))
        buffers = [io.BytesIO(), io.BytesIO()]
        image.save(buffers[0], format="PNG")
        mask.save(buffers[1], format="PNG")
        rows.append({"id": f"{name}-{i:05d}", "image": buffers[0].getvalue(), "mask": buffers[1].getvalue(), "prompt": None})
    return rows


def bare_loop(rows: list[dict], model: str, steps: int, batch_size: int, threads: int) -> tuple[float, float]:
    """(start-up seconds, steady images/s) of ``rtb.protect`` alone, on as many torch threads as a job actor."""
    import torch

    torch.set_num_threads(threads)
    began = time.perf_counter()
    images = [decode_image(r["image"]) for r in rows]
    masks = [decode_mask(r["mask"]) for r in rows]
    inpainter = load_inpainter(model, device="cpu")
    config = ProtectConfig(steps=steps, batch_size=batch_size)
    protect(images[:1], masks[:1], model=inpainter, config=config)  # warm-up: first-call allocations
    startup = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, len(images), batch_size):
        protect(images[start : start + batch_size], masks[start : start + batch_size], model=inpainter, config=config)
    return startup, len(images) / (time.perf_counter() - began)


def _proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def _peak_kib(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]), cmdline
    return None


def run_job(catalog_dir: str, output: str, count: int, model: str, steps: int, batch_size: int) -> dict:
    """Run ``jobs/protect.py`` in a fresh process; returns wall seconds, manifest and peak RSS (MiB)."""
    command = [sys.executable, str(REPO / "jobs" / "protect.py"), "--input", catalog_dir, "--output", output,
               "--model", model, "--steps", str(steps), "--batch-size", str(batch_size), "--run-id", f"bench-{count}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    peaks: dict[int, tuple[int, str]] = {}
    began = time.perf_counter()
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def poll() -> None:
        while job.poll() is None:
            for pid in _proc_tree(job.pid):
                found = _peak_kib(pid)
                if found and found[0] >= peaks.get(pid, (0, ""))[0]:
                    peaks[pid] = found
            time.sleep(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    log, _ = job.communicate()
    wall = time.perf_counter() - began
    poller.join()
    if job.returncode != 0:
        raise SystemExit(f"job failed ({job.returncode}):\n{log[-3000:]}")
    manifest = json.loads((Path(output) / "runs" / f"bench-{count}.json").read_text())
    # Steady state inside the run: PNGs land as batches finish; skip the first batch (pipeline fill).
    done = sorted(p.stat().st_mtime for p in (Path(output) / "images").glob("*.png"))
    steady = (len(done) - batch_size) / (done[-1] - done[batch_size - 1]) if len(done) > batch_size else float("nan")
    workers = [kib for pid, (kib, cmd) in peaks.items() if cmd.startswith("ray::")]
    return {
        "wall": wall,
        "steady": steady,
        "manifest": manifest,
        "driver_mib": peaks.get(job.pid, (0, ""))[0] / 1024,
        "worker_max_mib": max(workers, default=0) / 1024,
        "worker_sum_mib": sum(workers) / 1024,
        "workers": len(workers),
        "summary": [line for line in log.splitlines() if line.startswith("rtb protect:")][-1],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pipeline efficiency and memory of the protection job.")
    parser.add_argument("--images", type=int, default=16, help="N: the small catalog (the large one is 4N)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="reference")
    args = parser.parse_args(argv)
    n = args.images

    with tempfile.TemporaryDirectory(prefix="rtb-bench-") as tmp:
        # 1. Catalog.
        rows = build_catalog(4 * n, args.size)
        catalog.write_shards(rows[:n], f"{tmp}/catalog-small", rows_per_shard=max(1, n // 2))
        catalog.write_shards(rows, f"{tmp}/catalog-large", rows_per_shard=max(1, n // 2))
        threads = max(1, (os.cpu_count() or 1) - 1)  # what the job gives its one CPU actor (jobs.protect.cpu_threads)
        print(f"catalog: {4 * n} images {args.size}×{args.size}, steps {args.steps}, batch {args.batch_size}, "
              f"model {args.model}, {os.cpu_count()} CPUs, {threads} torch thread(s) in the bare loop and the actor")

        # 2-3. Bare loop, job on N, job on 4N, bare loop again: the machine may be shared, so the bare rate is
        # taken before and after the job runs and averaged.
        bare_startup, bare_before = bare_loop(rows[:n], args.model, args.steps, args.batch_size, threads)
        print(f"bare loop:    {bare_before:.3f} images/s steady (start-up {bare_startup:.1f} s: decode, model load, warm-up)")
        small = run_job(f"{tmp}/catalog-small", f"{tmp}/out-small", n, args.model, args.steps, args.batch_size)
        large = run_job(f"{tmp}/catalog-large", f"{tmp}/out-large", 4 * n, args.model, args.steps, args.batch_size)
        _, bare_after = bare_loop(rows[:n], args.model, args.steps, args.batch_size, threads)
        bare_rate = (bare_before + bare_after) / 2
        print(f"bare loop:    {bare_after:.3f} images/s steady after the jobs; mean {bare_rate:.3f} images/s")
        for run, count in ((small, n), (large, 4 * n)):
            assert run["manifest"]["counts"]["protected"] == count, run["summary"]
            print(f"job N={count:<4}   wall {run['wall']:.1f} s = {count / run['wall']:.3f} images/s end to end; "
                  f"peak RSS driver {run['driver_mib']:.0f} MiB, largest worker {run['worker_max_mib']:.0f} MiB "
                  f"({run['workers']} worker processes, {run['worker_sum_mib']:.0f} MiB together)")
        job_rate = large["steady"]
        marginal = 3 * n / (large["wall"] - small["wall"])
        startup = large["wall"] - 4 * n / job_rate
        print(f"job:          {job_rate:.3f} images/s steady (4N run, images written after the first batch; "
              f"N run {small['steady']:.3f}; across runs 3N/(T(4N)-T(N)) = {marginal:.3f}); "
              f"start-up {startup:.1f} s (wall − 4N/steady)")
        growth = large["driver_mib"] / max(small["driver_mib"], 1)
        print(f"memory:       driver {small['driver_mib']:.0f} → {large['driver_mib']:.0f} MiB (×{growth:.2f}), "
              f"largest worker {small['worker_max_mib']:.0f} → {large['worker_max_mib']:.0f} MiB from N to 4N")
        print(f"efficiency: {job_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
