"""One GA generation, per-trial in-process vs vectorized in-process, in the same run.

Each case is a generation of P individuals (the LODO schedule's spread of hyperparameters: the
defaults times 10^N(0, 0.5) per value, decays kept in [0, 0.99], one seed each) on one task for
the given number of steps. ``per-trial`` runs ``run_trial`` on each spec one after another
(what ``LocalExecutor(vectorize="off")`` does); ``vectorized`` runs them as
``LocalExecutor(vectorize="on")`` does: one population, or the shards of it that fit the memory
budget (``plan``), in the population form ``--formulations`` names (a row each; ``auto``: the
device's default). The ratio is per-trial wall / vectorized wall; member-steps/s counts loss
evaluations of all members per second. Memory per member: on CUDA the peak allocated over the
vectorized run / P, on the CPU the estimate ``tuner.population.member_bytes`` uses to split
shards (torch's CPU allocator keeps no peak). Both paths build their tasks inside the timing.

``--scale`` multiplies every step count (the per-trial bowl LODO generation alone takes minutes
here); ``--per-trial-members K`` times the per-trial path on the first K specs only and scales its
wall to P (trials are independent, so P/K times K trials' wall is the generation's; the table says
so). Data: real files under $LODOTUNE_DATA_DIR when present, else generated files of the real
shape (bench/task_steps.py's generator). Both paths are warmed first on a 2-member, 2-step
generation of the same case (one-time costs a process pays once, not per generation).

Usage: .venv/bin/python bench/ga_generation.py [--device cpu|cuda] [--scale S]
       [--per-trial-members K] [--only TASK:OPTIMIZER ...] [--members P ...]
       writes bench/results/ga_generation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import lodo
from tasks.population import FORMULATIONS
from tuner.population import member_bytes, plan, run_population
from tuner.trial import TrialResult, TrialSpec, run_trial

RESULTS = Path(__file__).resolve().parent / "results" / "ga_generation.json"
# (task, optimizer, members, steps, task options): the cases
CASES = [
    ("rosenbrock", "lodo", 32, 200, {}),
    ("rosenbrock", "adam", 32, 200, {}),
    ("noisy-quadratic-bowl", "lodo", 32, 1000, {}),
    ("noisy-quadratic-bowl", "adam", 32, 1000, {}),
    ("digits-mlp", "adam", 32, 300, {}),
    ("digits-autoregression", "lodo", 32, 30, {}),
]
DATA_TASKS = {"fashion-mnist-mlp", "uci-energy", "uci-protein", "mnist-autoregression", "resnet18-cifar10"}


def generation(task, optimizer, members, steps, options, device, seed=0) -> list[TrialSpec]:
    """P specs spread as a GA generation spreads them (log-normal around the defaults)."""
    rng = np.random.default_rng(seed)
    spec = lodo.get(optimizer)
    out = []
    for index in range(members):
        values = {}
        for h in spec.hyperparameters:
            if h.kind == "decay":
                values[h.name] = float(np.clip(1 - (1 - h.default) * 10 ** rng.normal(0, 0.5), 0.0, 0.99))
            else:
                values[h.name] = float(h.default * 10 ** rng.normal(0, 0.5))
        if optimizer.startswith("lodo"):
            values["lr"] *= 0.1  # α = 1 diverges at once on most tasks: the GA's survivors are smaller
        out.append(
            TrialSpec(
                task, optimizer, values, seed=seed + index, steps=steps, task_options=options, device=device
            )
        )
    return out


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_vectorized(specs: list[TrialSpec], formulation: str) -> tuple[list[TrialResult], list[int]]:
    """What ``LocalExecutor(vectorize="on")`` runs: the population in the shards that fit the
    memory budget (tuner.population.plan), one after another; also the shard sizes."""
    results, sizes = [], []
    for shard in plan(specs, "on"):
        results += run_population([specs[i] for i in shard.indices], formulation)
        sizes.append(len(shard.indices))
    return results, sizes


def run_case(task, optimizer, members, steps, options, device, per_trial_members, formulations) -> list[dict]:
    specs = generation(task, optimizer, members, steps, options, device)
    timed = specs[: per_trial_members or members]
    # Warm both paths (kernels, allocator, lazy imports: a process pays them once, not per generation)
    warm = generation(task, optimizer, 2, 2, options, device, seed=10_000)
    for spec in warm:
        run_trial(spec)
    for formulation in formulations:
        run_population(warm, formulation)
    synchronize(device)
    start = time.perf_counter()
    alone = [run_trial(s) for s in timed]
    synchronize(device)
    per_trial = (time.perf_counter() - start) * members / len(timed)
    return [
        vectorized_row(specs, alone, per_trial, device, formulation) | {"per_trial_timed_members": len(timed)}
        for formulation in formulations
    ]


def vectorized_row(specs, alone, per_trial, device, formulation) -> dict:
    members, first = len(specs), specs[0]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    vectorized, shards = run_vectorized(specs, formulation)
    synchronize(device)
    wall = time.perf_counter() - start
    memory = (
        torch.cuda.max_memory_allocated() / members if device.startswith("cuda") else member_bytes(specs[0])
    )
    pairs = [
        (a, b)
        for x, y in zip(vectorized, alone, strict=False)  # alone: the first K members
        for a, b in zip(x.losses[:50], y.losses[:50], strict=False)
        if np.isfinite(b)
    ]
    agree = max((abs(a - b) / max(abs(b), 1e-300) for a, b in pairs), default=0.0)
    evaluations = sum(len(r.losses) for r in vectorized)
    return {
        "task": first.task,
        "optimizer": first.optimizer,
        "members": members,
        "steps": first.steps,
        "shards": shards,
        "per_trial_s": per_trial,
        "vectorized_s": wall,
        "ratio": per_trial / wall,
        "member_steps_per_s": evaluations / wall,
        "per_trial_member_steps_per_s": sum(len(r.losses) for r in alone)
        / (per_trial * len(alone) / members),
        "memory_per_member_mb": memory / 2**20,
        "memory_kind": "peak allocated" if device.startswith("cuda") else "estimate",
        "diverged": sum(r.diverged for r in vectorized),
        "max_rel_diff_first_50": agree,
        "formulation": vectorized[0].execution.get("formulation"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("--per-trial-members", type=int, default=None)
    parser.add_argument("--members", type=int, nargs="+", default=None, help="override P (one row per value)")
    parser.add_argument("--only", nargs="+", default=None, help="TASK:OPTIMIZER cases to run")
    parser.add_argument("--batch-size", type=int, default=None, help="task batch_size option for data tasks")
    parser.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option for every case (e.g. metric_images=1: the CNNs' final metric, which "
        "otherwise dominates a short run)",
    )
    parser.add_argument(
        "--formulations",
        nargs="+",
        default=["auto"],
        choices=list(FORMULATIONS),
        help="the network tasks' population forms to time (a row each): auto (the device's), vmap, loop",
    )
    args = parser.parse_args()
    console = Console(width=max(160, Console().width))
    cases = CASES
    if args.only:
        wanted = [tuple(item.split(":")) for item in args.only]
        cases = [c for c in CASES if (c[0], c[1]) in wanted]
        cases += [(t, o, 32, 30, {}) for t, o in wanted if (t, o) not in {(c[0], c[1]) for c in CASES}]
    rows = []
    with tempfile.TemporaryDirectory() as generated:
        for task, optimizer, members, steps, options in cases:
            options = dict(options)
            data = "-"
            if task in DATA_TASKS:
                from task_steps import data_for  # bench/ is on sys.path when this file runs

                directory, data = data_for(task, Path("data"), Path(generated), np.random.default_rng(0))
                options["data_dir"] = str(directory)
            if args.batch_size is not None and task not in ("rosenbrock", "noisy-quadratic-bowl"):
                options["batch_size"] = args.batch_size
            for item in args.task_option:
                key, _, value = item.partition("=")
                options[key] = json.loads(value)
            for count in args.members or [members]:
                scaled = max(2, round(steps * args.scale))
                console.print(f"{task} {optimizer}: {count} members x {scaled} steps ...")
                case_rows = run_case(
                    task, optimizer, count, scaled, options, args.device,
                    args.per_trial_members, args.formulations,
                )  # fmt: skip
                rows += [row | {"data": data} for row in case_rows]
    table = Table(
        "task", "optimizer", "P × steps", "shards", "form", "per-trial s", "vectorized s", "ratio",
        "member-steps/s", "per-trial steps/s", "MB/member", "max rel diff",
        title=f"GA generation, {args.device}",
        caption="ratio: per-trial wall / vectorized wall, same run; MB/member: peak (cuda), estimate (cpu)",
    )  # fmt: skip
    for r in rows:
        note = (
            "" if r["per_trial_timed_members"] == r["members"] else f" ({r['per_trial_timed_members']} timed)"
        )
        table.add_row(
            r["task"], r["optimizer"], f"{r['members']} × {r['steps']}", "+".join(map(str, r["shards"])),
            r["formulation"], f"{r['per_trial_s']:.2f}{note}",
            f"{r['vectorized_s']:.2f}", f"{r['ratio']:.1f}×", f"{r['member_steps_per_s']:,.0f}",
            f"{r['per_trial_member_steps_per_s']:,.0f}", f"{r['memory_per_member_mb']:.2f}",
            f"{r['max_rel_diff_first_50']:.1e}",
        )  # fmt: skip
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "scale": args.scale,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(document, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
