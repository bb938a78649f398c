"""Forward + backward steps per second of every task, with and without torch.compile / channels-last.

One step = ``task.train_loss()`` (fresh minibatch: sampling, input construction, augmentation)
+ ``backward()``, timed per step; the table shows the median. Every task runs at its paper batch
size except ResNet-18 on the CPU, which runs at ``--resnet-batch`` (default 64 on the CPU: one step
at 2048 takes minutes and ~16 GB here; 2048 on CUDA); the batch column says which. Ratios are
against the task's ``eager`` row (its default options) measured in the same run.

Variants:

* ``eager``              the task as built by default (the baseline, 1.00);
* ``grouped-depthwise``  autoregression CNNs with oneDNN's grouped convolution (groups 40,
                         multiplier 3) at every size, instead of the default repeat + depthwise
                         path on the CPU for images of at most 8×8;
* ``compile``            ``compile=True`` (torch.compile; the first step, which compiles, is
                         reported separately and left out of the median; it is a cold compile
                         into a fresh cache unless $TORCHINDUCTOR_CACHE_DIR is set);
* ``channels-last``      ResNet-18 with ``channels_last=True`` (also combined with ``compile``).

The MNIST CNN's input construction (index draws, the 5-channel inputs, the targets) is timed on
its own at batch 256 and shown as a share of the eager step.

Data: the real files under $LODOTUNE_DATA_DIR (default ./data) when present; otherwise generated
data of the real shape, written in the real formats to a temporary directory (the output says
which). A step's cost does not depend on the pixel values or the dataset's length.

Contention: another process on a 2-core machine makes torch's two OpenMP threads wait on each
other, which slows a step many times over. Each variant first waits (up to 20 s) for the CPUs to
be quiet; steps during which other processes used ≥ 15 % of the CPUs are discarded, and the
``quiet/all`` column says how many steps the median is over. A variant with no quiet step is
timed again (twice at most) after waiting for a quiet spell; "0 (noisy)": still none was quiet,
the median is over all steps and not to be trusted.

Usage: .venv/bin/python bench/task_steps.py [--quick] [--no-compile] [--device cpu|cuda]
       [--resnet-batch N] [--only NAME ...]      writes bench/results/task_steps.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import platform
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import tasks
from tasks.autoregression import DepthwiseConv2d

RESULTS = Path(__file__).resolve().parent / "results" / "task_steps.json"
DATA_TASKS = ("mnist-autoregression", "resnet18-cifar10", "uci-energy", "uci-protein", "fashion-mnist-mlp")
_HZ = os.sysconf("SC_CLK_TCK")
QUIET = 0.15  # largest share of the CPUs other processes may use during a step that is kept
RETRIES = 2
_NCPU = os.cpu_count() or 1


# -- contention -------------------------------------------------------------------------------


def cpu_snapshot() -> tuple[int, int] | None:
    """(busy jiffies of all CPUs, jiffies of this process)."""
    try:
        with open("/proc/stat") as handle:
            values = [int(x) for x in handle.readline().split()[1:9]]
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return sum(values) - values[3] - values[4], int(fields[11]) + int(fields[12])


def others_share(before, after, seconds: float) -> float | None:
    """Share of all CPUs used by other processes between two snapshots."""
    if before is None or after is None or seconds <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / (_HZ * _NCPU * seconds))


def wait_quiet(max_wait_s: float, threshold: float = QUIET) -> None:
    deadline = time.perf_counter() + max_wait_s
    while time.perf_counter() < deadline:
        before = cpu_snapshot()
        time.sleep(1.0)
        share = others_share(before, cpu_snapshot(), 1.0)
        if share is None or share < threshold:
            return


# -- generated data in the real formats ---------------------------------------------------------


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=1) as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def generate_data(root: Path, name: str, rng: np.random.Generator) -> str:
    """Writes files of the real format and per-example shape for ``name``; returns a description."""
    if name in ("mnist-autoregression", "fashion-mnist-mlp"):
        directory = root / ("MNIST" if name == "mnist-autoregression" else "FashionMNIST") / "raw"
        directory.mkdir(parents=True, exist_ok=True)
        for split, count in (("train", 6000), ("t10k", 1000)):
            _idx(directory / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
            _idx(directory / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, count))
        return "generated: 6,000 + 1,000 random 28×28 images (IDX)"
    if name == "resnet18-cifar10":
        directory = root / "cifar-10-batches-py"
        directory.mkdir(parents=True, exist_ok=True)
        for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            content = {
                b"data": rng.integers(0, 256, (1024, 3072), dtype=np.uint8),
                b"labels": rng.integers(0, 10, 1024).tolist(),
            }
            (directory / batch).write_bytes(pickle.dumps(content, protocol=2))
        return "generated: 5 × 1,024 random 32×32×3 images (python batches)"
    directory, rows, columns = {
        "uci-energy": ("UCI_Energy", 768, 9),
        "uci-protein": ("UCI_Protein", 45730, 10),
    }[name]
    (root / directory / "raw").mkdir(parents=True, exist_ok=True)
    np.savetxt(root / directory / "raw" / "data_targets.txt", rng.normal(size=(rows, columns)), fmt="%.6f")
    np.savetxt(root / directory / "permutation_indices.txt", rng.permutation(rows), fmt="%i")
    return f"generated: {rows:,} random rows × {columns} columns (text)"


def data_for(name: str, real_dir: Path, generated_dir: Path, rng: np.random.Generator) -> tuple[Path, str]:
    try:
        tasks.build(name, seed=0, data_dir=real_dir)
        return real_dir, f"real ({real_dir})"
    except FileNotFoundError:
        return generated_dir, generate_data(generated_dir, name, rng)


# -- timing -------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(task, *, budget_s: float, min_steps: int, max_steps: int) -> dict:
    """First step on its own (warm-up / compilation), then steps until the budget is spent.

    A step during which other processes used ≥ ``QUIET`` of the CPUs is discarded (up to a
    wall-clock cap of four budgets); the median is over the quiet steps when there are any.
    """
    parameters = task.parameters()

    def step() -> tuple[float, float | None]:
        for p in parameters:
            p.grad = None
        synchronize(task.device)
        before, start = cpu_snapshot(), time.perf_counter()
        task.train_loss().backward()
        synchronize(task.device)
        seconds = time.perf_counter() - start
        return seconds, others_share(before, cpu_snapshot(), seconds)

    first, _ = step()
    deadline = time.perf_counter() + 4 * budget_s
    quiet: list[float] = []
    noisy: list[float] = []
    while len(quiet) + len(noisy) < max_steps and time.perf_counter() < deadline:
        seconds, others = step()
        (noisy if others is not None and others >= QUIET else quiet).append(seconds)
        if len(quiet) >= min_steps and sum(quiet) >= budget_s:
            break
    samples = quiet or noisy
    return {
        "first_step_s": first,
        "median_s": statistics.median(samples),
        "quiet": len(quiet),
        "noisy": len(noisy),
    }


def time_input_construction(task, repeats: int = 20) -> float:
    """Median seconds of the MNIST CNN's input construction for one batch (draws included)."""
    samples = []
    for _ in range(repeats):
        synchronize(task.device)
        start = time.perf_counter()
        indices = torch.randint(len(task.train_images), (task.batch_size,)).to(task.device)
        rows = torch.randint(task.size, (task.batch_size,)).to(task.device)
        cols = torch.randint(task.size, (task.batch_size,)).to(task.device)
        images = task.train_images[indices]
        task.inputs(images, rows, cols)
        task.inputs.targets(images, rows, cols)
        synchronize(task.device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def variants(name: str, *, compile_variants: bool) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = [("eager", {})]
    if name.endswith("autoregression"):
        rows.append(("grouped-depthwise", {}))
    if name == "resnet18-cifar10":
        rows.append(("channels-last", {"channels_last": True}))
    if compile_variants and (name.endswith("autoregression") or name == "resnet18-cifar10"):
        rows.append(("compile", {"compile": True}))
    if compile_variants and name == "resnet18-cifar10":
        rows.append(("compile+channels-last", {"compile": True, "channels_last": True}))
    return rows


def render(rows: list[dict], device: torch.device) -> Table:
    table = Table(title=f"Task forward+backward on {device} ({torch.get_num_threads()} threads; medians)")
    columns = ("task", "variant", "batch", "steps/s", "ms/step", "×eager", "1st step s", "quiet/all", "data")
    for column in columns:
        table.add_column(column, justify="left" if column in ("task", "variant", "data") else "right")
    for row in rows:
        batch = "-" if row["batch"] is None else str(row["batch"])
        if row["batch"] != row["paper_batch"]:
            batch += f" (paper {row['paper_batch']})"
        table.add_row(
            row["task"],
            row["variant"],
            batch,
            f"{row['steps_per_s']:.2f}",
            f"{row['ms_per_step']:.1f}",
            f"{row['ratio_vs_eager']:.2f}",
            f"{row['first_step_s']:.1f}",
            f"{row['quiet_steps']}/{row['quiet_steps'] + row['noisy_steps_discarded']}"
            if row["quiet_steps"]
            else "0 (noisy)",
            row["data"].split(":")[0].split(" (")[0],
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--quick", action="store_true", help="small MNIST/ResNet batches, 2 s per variant, no compile"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument(
        "--resnet-batch", type=int, default=None, help="ResNet batch (default 2048 on CUDA, 64 on CPU)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="task names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    console = Console(width=150)
    budget = 2.0 if args.quick else 8.0
    resnet_batch = args.resnet_batch or (2048 if device.type == "cuda" else (16 if args.quick else 64))
    batch_override = {"resnet18-cifar10": resnet_batch}
    if args.quick:
        batch_override["mnist-autoregression"] = 64
    compile_variants = not (args.quick or args.no_compile)
    names = args.only or list(tasks.TASK_NAMES)
    real_dir = Path(os.environ.get("LODOTUNE_DATA_DIR") or "data").resolve()
    load_start = os.getloadavg()
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    inputs: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lodotune-bench-") as generated:
        # A fresh compile cache, removed afterwards, so the first compiled step is a cold compile.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(generated) / "inductor"))
        for name in names:
            described = next(entry for entry in tasks.describe() if entry["name"] == name)
            paper_batch = next(
                (o["default"] for o in described["options"] if o["name"] == "batch_size"), None
            )
            options: dict = {}
            data = "none needed"
            if name in DATA_TASKS:
                data_dir, data = data_for(name, real_dir, Path(generated), rng)
                options["data_dir"] = data_dir
            if name in batch_override:
                options["batch_size"] = batch_override[name]
            if "metric_images" in {o["name"] for o in described["options"]}:
                options["metric_images"] = 1
            baseline = None
            for variant, extra in variants(name, compile_variants=compile_variants):
                wait_quiet(20.0)
                task = tasks.build(name, seed=0, device=device, **options, **extra)
                if variant == "grouped-depthwise":
                    for module in task.model.modules():
                        if isinstance(module, DepthwiseConv2d):
                            module.repeat_on_cpu = False
                heavy = name in ("mnist-autoregression", "resnet18-cifar10") and device.type == "cpu"
                timing = time_steps(task, budget_s=budget, min_steps=2 if heavy else 5, max_steps=200)
                for _ in range(RETRIES):  # no quiet step at all: wait for a quiet spell and time again
                    if timing["quiet"]:
                        break
                    wait_quiet(60.0)
                    again = time_steps(task, budget_s=budget, min_steps=2 if heavy else 5, max_steps=200)
                    timing = {**again, "first_step_s": timing["first_step_s"]}
                baseline = baseline or timing["median_s"]
                batch = options.get("batch_size", paper_batch)
                rows.append(
                    {
                        "task": name,
                        "variant": variant,
                        "batch": batch,
                        "paper_batch": paper_batch,
                        "steps_per_s": 1 / timing["median_s"],
                        "examples_per_s": (batch or 1) / timing["median_s"],
                        "ms_per_step": 1e3 * timing["median_s"],
                        "first_step_s": timing["first_step_s"],
                        "quiet_steps": timing["quiet"],
                        "noisy_steps_discarded": timing["noisy"] if timing["quiet"] else 0,
                        "ratio_vs_eager": baseline / timing["median_s"],
                        "data": data,
                    }
                )
                if name == "mnist-autoregression" and variant == "eager":
                    seconds = time_input_construction(task)
                    inputs = {
                        "batch": task.batch_size,
                        "ms": 1e3 * seconds,
                        "share_of_eager_step": seconds / timing["median_s"],
                    }
                console.print(f"  {name} {variant}: {1e3 * timing['median_s']:.1f} ms/step")
                del task
    elapsed = time.perf_counter() - started

    console.print(render(rows, device))
    if inputs:
        console.print(
            f"MNIST CNN input construction at batch {inputs['batch']}: {inputs['ms']:.1f} ms "
            f"= {100 * inputs['share_of_eager_step']:.2f}% of the eager step"
        )
    for name in sorted({row["task"] for row in rows if not row["data"].startswith(("real", "none"))}):
        console.print(f"{name}: {next(r['data'] for r in rows if r['task'] == name)}")
    load_end = os.getloadavg()
    console.print(f"total {elapsed:.0f} s; load average start {load_start[0]:.2f}, end {load_end[0]:.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": str(device),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "baseline": "eager (each task's default options) = 1.0",
        "load_average": {"start": load_start, "end": load_end},
        "rows": rows,
        "mnist_input_construction": inputs,
        "elapsed_s": elapsed,
    }
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
