"""Pipeline efficiency: images/s of the whole protection job vs the bare optimizer loop, and where it waits.

    python benchmarks/pipeline.py --images 16 --size 128 --steps 20 --batch-size 8            # Ray job (default)
    python benchmarks/pipeline.py --no-ray --device cuda --images 64 --size 512 --steps 20    # no Ray (GPU box)

1. Builds Parquet catalogs of N and 4N images (the bundled samples, resized to one size so that both sides
   batch identically) and decodes the first N in this process.
2. Bare loop: ``rtb.protect`` on those N decoded images, batch by batch, model loaded once, after a warm-up
   (one image on CPU; one full batch on CUDA, where the first call at a batch shape pays for kernel selection;
   decode + load + warm-up reported as start-up). Measured before and after the job runs and averaged, since
   the machine may be shared.
3. Job, one of:

   - Ray (default): ``python jobs/protect.py`` on the N and on the 4N catalog, each in a fresh process with its
     own local Ray. Steady-state rate of a run = images written after the first batch / time between the first
     batch's last PNG and the last PNG (file mtimes): every stage's cost is in it, Ray/actor/model start-up is
     not. Start-up = wall − 4N / steady rate. 3N / (T(4N) − T(N)) across the two runs is printed as a
     cross-check. Peak resident memory (VmHWM from /proc) of the driver and of every Ray worker process of
     each job run, polled every 0.25 s: it must not grow from N to 4N.
   - ``--no-ray`` (for a machine without Ray, e.g. the GPU box): the job's own stage functions on the 4N
     catalog in this process, no Ray: a decode thread pool runs ``jobs.stages.decode_and_validate`` on
     Parquet batches of ``--batch-size`` rows and feeds a bounded queue; the ``jobs.stages.Protector`` actor
     class (the code the actor runs, model loaded once) consumes it on the main thread; an encode thread pool
     drains its output through a bounded queue into ``jobs.stages.write_images`` (PNG encode and write under
     ``--output``). Steady-state rate as for Ray (images written after the first batch / their time span,
     from the writers' own clocks); over the main thread's steady state (end of the first Protector call to
     the hand-off of the last) the fractions of wall time it waited on an empty input queue (*starved*: decode
     too slow) and on a full writer queue (*blocked*: encode/write too slow); GPU utilisation and memory
     sampled every 0.2 s (NVML, else ``nvidia-smi``) over the same span, mean and 10th percentile. Unlike
     Ray's worker processes, the decode/encode threads here share the interpreter lock with the Protector's
     thread, so this mode is, if anything, pessimistic about what the CPU stages cost the optimizer.

Prints ``efficiency: X.XX`` (steady job rate / steady bare rate) as the last line.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


def bare_loop(rows: list[dict], model: str, steps: int, batch_size: int, threads: int | None,
              device: str = "cpu") -> tuple[float, float]:
    """(start-up seconds, steady images/s) of ``rtb.protect`` alone, on as many torch threads as a job actor.

    ``threads`` None leaves torch's default (what a GPU actor gets). The warm-up is one image on CPU and one
    full batch on CUDA, where the first call at each batch shape selects kernels and grows the allocator.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    images = [decode_image(r["image"]) for r in rows]
    masks = [decode_mask(r["mask"]) for r in rows]
    inpainter = load_inpainter(model, device=device)
    config = ProtectConfig(steps=steps, batch_size=batch_size)
    warm = batch_size if device == "cuda" else 1
    protect(images[:warm], masks[:warm], model=inpainter, config=config)  # warm-up: first-call allocations
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


def run_job(catalog_dir: str, output: str, count: int, model: str, steps: int, batch_size: int,
            device: str = "cpu") -> dict:
    """Run ``jobs/protect.py`` in a fresh process; returns wall seconds, manifest and peak RSS (MiB).

    On ``device`` cpu the actor is held off any GPU (``--gpus-per-actor 0``, what the job does anyway on a
    machine without one); on cuda the job's own default applies (one GPU per actor when Ray sees one).
    """
    command = [sys.executable, str(REPO / "jobs" / "protect.py"), "--input", catalog_dir, "--output", output,
               "--model", model, "--steps", str(steps), "--batch-size", str(batch_size), "--run-id", f"bench-{count}"]
    if device == "cpu":
        command += ["--gpus-per-actor", "0"]
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


# No Ray: the job's stages driven in this process (threads for the CPU stages, the Protector on the main thread).

_DONE = object()  # end of a stream on a queue


def _put(channel: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` on a bounded queue, waiting while it is full; False when ``stop`` is set first."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(channel: queue.Queue, stop: threading.Event):
    """The next item of ``channel``, waiting while it is empty; ``_DONE`` when ``stop`` is set first."""
    while not stop.is_set():
        try:
            return channel.get(timeout=0.1)
        except queue.Empty:
            continue
    return _DONE


def read_batches(shards: list[str], batch_size: int):
    """Tables of exactly ``batch_size`` catalog rows (the last may be shorter) across Parquet shards: the blocks
    the job's ``repartition`` hands to its actor stage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pending = None
    for shard in shards:
        for record_batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size):
            table = pa.Table.from_batches([record_batch])
            pending = table if pending is None else pa.concat_tables([pending, table])
            while pending.num_rows >= batch_size:
                yield pending.slice(0, batch_size)
                pending = pending.slice(batch_size)
    if pending is not None and pending.num_rows:
        yield pending


def gpu_selector() -> str:
    """The NVML index or UUID of the GPU torch uses (``CUDA_VISIBLE_DEVICES`` maps torch's index to it).

    Without ``CUDA_VISIBLE_DEVICES`` torch's index is taken as NVML's, which holds on a one-GPU machine (CUDA
    orders GPUs fastest first, NVML by PCI bus, unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
    """
    import torch

    current = torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return visible.split(",")[current].strip() if visible else str(current)


class GpuSampler:
    """GPU utilisation (%) and memory used (MiB) of one GPU, sampled every ``interval`` s in the background.

    Reads NVML (``pynvml``, package nvidia-ml-py) when importable, else one long-running ``nvidia-smi
    --query-gpu=utilization.gpu,memory.used -lms`` process. NVML's utilisation is the share of its last sample
    period (1/6 s to 1 s, by product) in which at least one kernel ran: it says the GPU was kept busy, not how
    fully its cores were used.

    Args:
        selector: an NVML index (``"0"``) or a GPU/MIG UUID, as :func:`gpu_selector` gives.
        interval: seconds between samples.
    """

    def __init__(self, selector: str, interval: float = 0.2):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.selector = selector
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (time.perf_counter(), utilisation %, used MiB)
        self.source = ""
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None

    def start(self) -> GpuSampler:
        """Start sampling (NVML, else nvidia-smi); with neither, record why and sample nothing."""
        try:
            import pynvml
        except ImportError:
            pynvml = None
        if pynvml is not None:
            self.source = "NVML"
            self._thread = threading.Thread(target=self._poll_nvml, args=(pynvml,), daemon=True)
        elif shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", str(round(self.interval * 1000)), "-i", self.selector],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self._thread = threading.Thread(target=self._read_nvidia_smi, daemon=True)
        else:
            self.error = "neither pynvml (nvidia-ml-py) nor nvidia-smi is available"
            return self
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling; the samples stay."""
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll_nvml(self, pynvml) -> None:
        try:
            pynvml.nvmlInit()
            try:
                if self.selector.startswith(("GPU-", "MIG-")):
                    handle = pynvml.nvmlDeviceGetHandleByUUID(self.selector)
                else:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(int(self.selector))
                while not self._stop.is_set():
                    busy = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                    used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                    self.samples.append((time.perf_counter(), float(busy), used))
                    self._stop.wait(self.interval)
            finally:
                pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:  # e.g. utilisation is not supported on a MIG instance
            self.error = f"NVML: {error}"

    def _read_nvidia_smi(self) -> None:
        for line in self._process.stdout:
            fields = [part.strip() for part in line.split(",")]
            try:
                self.samples.append((time.perf_counter(), float(fields[0]), float(fields[1])))
            except (ValueError, IndexError):  # "[N/A]" (MIG) or an error message
                self.error = f"nvidia-smi said {line.strip()!r}"

    def summary(self, start: float, end: float) -> str:
        """Mean, 10th percentile and minimum utilisation and the most memory used over ``[start, end]``."""
        steady = [(busy, used) for at, busy, used in self.samples if start <= at <= end]
        if not steady:
            return f"n/a ({self.error or 'no sample fell in the steady state'})"
        busy = np.array([b for b, _ in steady])
        return (f"mean {busy.mean():.0f} %, p10 {np.percentile(busy, 10):.0f} %, min {busy.min():.0f} % "
                f"({len(steady)} {self.source} samples every {self.interval} s over the steady state); "
                f"memory used up to {max(u for _, u in steady):.0f} MiB")


def run_no_ray(catalog_dir: str, output: str, model: str, steps: int, batch_size: int, device: str,
               threads: int | None, decode_workers: int, encode_workers: int, queue_depth: int) -> dict:
    """Protect the Parquet catalog at ``catalog_dir`` with the job's stages in this process, without Ray.

    ``decode_and_validate`` (``decode_workers`` threads) → bounded queue of ``queue_depth`` decoded batches →
    ``Protector(...)(batch)`` on this thread → bounded queue of ``queue_depth`` protected batches →
    ``write_images(batch, output)`` (``encode_workers`` threads): the functions and arguments of the job's
    ``map_batches`` stages, minus what a first run does not need (no state join: every row is new; no
    metrics/errors sink: the rows ``write_images`` returns are kept and returned).

    Returns the timings (``time.perf_counter`` seconds), the fractions of the main thread's steady state spent
    busy / starved / blocked, the write stage's result rows (``results``, a pyarrow table) and a GPU line.
    A worker's exception stops the others and is raised here.
    """
    import pyarrow as pa

    from jobs.config import JobConfig, key_salt, protect_config
    from jobs.stages import Protector, decode_and_validate
    from jobs.writer import write_images

    began = time.perf_counter()
    # 1. The actor's code, on the device and threads the job would give it; the model is loaded once.
    job = JobConfig(input=catalog_dir, output=output, model=model, steps=steps, batch_size=batch_size)
    protector = Protector(model=model, config=protect_config(job), threads=threads, device=device)
    salt = key_salt(job, protector.inpainter.fingerprint)
    loaded = time.perf_counter()
    sampler = GpuSampler(gpu_selector()).start() if device == "cuda" else None

    # 2. The CPU stages' workers: decoders pull raw batches in turn; writers drain the protected ones.
    raw = read_batches(sorted(str(p) for p in Path(catalog_dir).glob("*.parquet")), batch_size)
    raw_lock = threading.Lock()
    decoded: queue.Queue = queue.Queue(maxsize=queue_depth)
    protected: queue.Queue = queue.Queue(maxsize=queue_depth)
    stop = threading.Event()
    decode_seconds: list[float] = []
    written: list[tuple[float, float, pa.Table]] = []  # (end time, seconds, result rows) per written batch

    def decode_worker() -> None:
        try:
            while True:
                with raw_lock:
                    batch = next(raw, None)
                if batch is None:
                    return
                started = time.perf_counter()
                table = decode_and_validate(batch, key_salt=salt)
                decode_seconds.append(time.perf_counter() - started)
                if not _put(decoded, table, stop):
                    return
        except BaseException:
            stop.set()
            raise
        finally:
            _put(decoded, _DONE, stop)

    def write_worker() -> None:
        try:
            while (table := _get(protected, stop)) is not _DONE:
                started = time.perf_counter()
                result = write_images(table, output)
                ended = time.perf_counter()
                written.append((ended, ended - started, result))
        except BaseException:
            stop.set()
            raise

    # 3. The Protector on this thread, the GPU's only client: each wait for input, call and hand-off timed.
    waits, calls, handoffs = [], [], []  # (start, end) of each
    with (ThreadPoolExecutor(decode_workers, thread_name_prefix="decode") as decoders,
          ThreadPoolExecutor(encode_workers, thread_name_prefix="encode") as encoders):
        workers = [decoders.submit(decode_worker) for _ in range(decode_workers)]
        workers += [encoders.submit(write_worker) for _ in range(encode_workers)]
        try:
            finished = 0
            while finished < decode_workers and not stop.is_set():
                asked = time.perf_counter()
                table = _get(decoded, stop)
                got = time.perf_counter()
                waits.append((asked, got))
                if table is _DONE:
                    finished += 1
                    continue
                out = protector(table)
                done = time.perf_counter()
                calls.append((got, done))
                _put(protected, out, stop)
                handoffs.append((done, time.perf_counter()))
            for _ in range(encode_workers):
                _put(protected, _DONE, stop)
        except BaseException:
            stop.set()
            raise
        finally:
            if sampler is not None:
                sampler.stop()
        for worker in workers:
            worker.result()  # a worker's exception surfaces here
    ended = time.perf_counter()

    # 4. Steady state: rates from the writers' clocks, as the Ray mode's PNG mtimes; the main thread's
    #    fractions from the end of its first Protector call to its last hand-off.
    written.sort(key=lambda item: item[0])
    ok = [result.column("status").to_pylist().count("ok") for _, _, result in written]
    span = written[-1][0] - written[0][0] if len(written) > 1 else 0.0
    start, end = calls[0][1], handoffs[-1][1]
    window = end - start

    def fraction(intervals: list[tuple[float, float]]) -> float:
        inside = sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
        return inside / window if window > 0 else math.nan

    cuda_peak = ""
    if device == "cuda":
        import torch

        cuda_peak = f"; torch peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    return {
        "wall": ended - began,
        "load": loaded - began,
        "first_written": written[0][0] - began,
        "steady": (sum(ok) - ok[0]) / span if span > 0 else math.nan,
        "steady_images": sum(ok) - ok[0],
        "span": span,
        "window": window,
        "busy": fraction(calls),
        "starved": fraction(waits),
        "blocked": fraction(handoffs),
        "longest_starved": max((min(b, end) - max(a, start) for a, b in waits if a < end and b > start), default=0.0),
        "decode_seconds": sum(decode_seconds),
        "write_seconds": sum(seconds for _, seconds, _ in written),
        "results": pa.concat_tables([result for _, _, result in written]),
        "gpu": ("n/a (no CUDA)" if sampler is None else sampler.summary(start, end)) + cuda_peak,
    }


def check_args(args: argparse.Namespace) -> str:
    """Raise ``ValueError`` naming the first bad argument; returns the device to use (``cpu`` or ``cuda``)."""
    import torch

    for name in ("images", "size", "steps", "batch_size", "decode_workers", "encode_workers", "queue_depth"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.no_ray and 4 * args.images <= args.batch_size:
        raise ValueError(f"--no-ray needs two batches or more for a steady state: 4 × --images {args.images} "
                         f"must exceed --batch-size {args.batch_size}")
    if args.output is not None and not args.no_ray:
        raise ValueError(f"--output applies to --no-ray only, got --output {args.output!r} without it")
    if args.output is not None and any((Path(args.output) / "images").glob("*")):
        raise ValueError(f"--output {args.output!r} already holds images/: give an empty or new directory")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return args.device


def report_ray(small: dict, large: dict, n: int) -> float:
    """Print the Ray job's lines; returns its steady rate (the 4N run's)."""
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
    return job_rate


def report_no_ray(run: dict, ids: list[str], output: str, args: argparse.Namespace, device: str) -> float:
    """Check that every id came out exactly once as an ``ok`` row and one PNG; print the lines; returns the
    steady rate."""
    results = run["results"].to_pylist()
    produced = sorted(row["id"] for row in results)
    pngs = sorted(p.name[: -len(".png")] for p in (Path(output) / "images").glob("*.png"))
    failed = [f"{row['id']}: {row['stage']}: {row['error']}" for row in results if row["status"] != "ok"]
    if produced != sorted(ids) or pngs != sorted(ids) or failed:
        raise SystemExit(f"the pipeline lost, duplicated or failed ids: {len(ids)} in, {len(produced)} result rows, "
                         f"{len(pngs)} PNGs, failures {failed[:3]}")
    count = len(ids)
    print(f"pipeline:     {count} images, no Ray: decode ({args.decode_workers} threads) → Protector (main thread, "
          f"{device}) → PNG encode/write ({args.encode_workers} threads), queues of {args.queue_depth} batches; "
          f"wall {run['wall']:.1f} s (model load {run['load']:.1f} s, first batch written at {run['first_written']:.1f} s)")
    print(f"job:          {run['steady']:.3f} images/s steady ({run['steady_images']} images written after the "
          f"first batch, over {run['span']:.1f} s)")
    print(f"main thread:  busy {run['busy']:.3f}, starved {run['starved']:.3f}, blocked {run['blocked']:.3f} of its "
          f"steady state ({run['window']:.1f} s: end of the first Protector call to the last hand-off); "
          f"longest starved wait {1000 * run['longest_starved']:.0f} ms")
    print(f"cpu stages:   decode {1000 * run['decode_seconds'] / count:.1f} ms/image, encode+write "
          f"{1000 * run['write_seconds'] / count:.1f} ms/image (worker thread time)")
    print(f"gpu utilisation: {run['gpu']}")
    return run["steady"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pipeline efficiency and memory of the protection job.")
    parser.add_argument("--images", type=int, default=16, help="N: the small catalog (the large one is 4N)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="reference", help="reference, a diffusers directory, ... (rtb.load_inpainter)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where the bare loop and the job's Protector run; auto: cuda when torch sees one")
    parser.add_argument("--no-ray", action="store_true",
                        help="drive the job's stages in this process (threads, no Ray) on the 4N catalog")
    parser.add_argument("--output", help="--no-ray: directory for the protected images (default: a temporary one)")
    parser.add_argument("--decode-workers", type=int, default=4, help="--no-ray: decode threads")
    parser.add_argument("--encode-workers", type=int, default=4, help="--no-ray: PNG encode/write threads")
    parser.add_argument("--queue-depth", type=int, default=2,
                        help="--no-ray: batches at most waiting for the Protector, and for a writer")
    args = parser.parse_args(argv)
    n = args.images

    # 1. Check the arguments.
    device = check_args(args)

    with tempfile.TemporaryDirectory(prefix="rtb-bench-") as tmp:
        # 2. Catalog.
        rows = build_catalog(4 * n, args.size)
        if not args.no_ray:
            catalog.write_shards(rows[:n], f"{tmp}/catalog-small", rows_per_shard=max(1, n // 2))
        catalog.write_shards(rows, f"{tmp}/catalog-large", rows_per_shard=max(1, n // 2))
        # What the job gives its one CPU actor (jobs.protect.cpu_threads); a GPU actor keeps torch's default.
        threads = None if device == "cuda" else max(1, (os.cpu_count() or 1) - 1)
        print(f"catalog: {4 * n} images {args.size}×{args.size}, steps {args.steps}, batch {args.batch_size}, "
              f"model {args.model}, {os.cpu_count()} CPUs, device {device}, "
              f"{threads or 'default'} torch thread(s) in the bare loop and the actor")

        # 3-5. Bare loop, job (Ray: on N and on 4N; no Ray: on 4N), bare loop again: the machine may be shared,
        # so the bare rate is taken before and after the job runs and averaged.
        bare_startup, bare_before = bare_loop(rows[:n], args.model, args.steps, args.batch_size, threads, device)
        print(f"bare loop:    {bare_before:.3f} images/s steady (start-up {bare_startup:.1f} s: decode, model load, warm-up)")
        if args.no_ray:
            output = args.output or f"{tmp}/out-large"
            run = run_no_ray(f"{tmp}/catalog-large", output, args.model, args.steps, args.batch_size, device, threads,
                             args.decode_workers, args.encode_workers, args.queue_depth)
        else:
            small = run_job(f"{tmp}/catalog-small", f"{tmp}/out-small", n, args.model, args.steps, args.batch_size, device)
            large = run_job(f"{tmp}/catalog-large", f"{tmp}/out-large", 4 * n, args.model, args.steps, args.batch_size,
                            device)
        _, bare_after = bare_loop(rows[:n], args.model, args.steps, args.batch_size, threads, device)
        bare_rate = (bare_before + bare_after) / 2
        print(f"bare loop:    {bare_after:.3f} images/s steady after the job; mean {bare_rate:.3f} images/s")

        # 6. The job's figures, then the efficiency (last line).
        if args.no_ray:
            job_rate = report_no_ray(run, [r["id"] for r in rows], output, args, device)
        else:
            job_rate = report_ray(small, large, n)
        print(f"efficiency: {job_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
