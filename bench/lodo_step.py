"""Cost of one LODO step on the CPU: time, memory and a memory-bandwidth floor.

For each n and each layout of ``BlockPermutation`` (b = 4, N = 16, hidden width
ñ = 2n + 4 − (2n mod 4), θ has N·b·ñ = 64ñ float64 numbers) this measures the median time of

* forward        ``direction(θ, m)`` = P(θ)m: N layers forward on m (storing their inputs) + N transposed;
* hypergradient  ``hypergradient(θ, m, g)``: N layers forward on g (storing their inputs), then one
                 two-column downward pass that also accumulates ∂/∂θ;
* fwd+hyper      both, in the order of a step (hypergradient, then direction); the issue's target
                 is n = 1e5 fwd+hyper ≤ 60 ms;
* LODO step      ``LODO.step()``: flat gradient, hypergradient, Keras-Adam on θ, momentum EMA, direction;
* Adam step      ``torch.optim.Adam.step()`` on the same n float32 parameters (the named baseline).

Memory: the activations LODO's cache holds (2·N·ñ stored layer inputs, the ñ-vector A·Πm and the
scratch vectors; the hypergradient buffer, W numbers, is left out) against what an autograd tape of
P(θ)m saves (measured at n = 1e4 with saved-tensor hooks, 2·N·ñ, and scaled), the meta-state
(θ, Adam's two slots, the momentum), and the
growth of the process's peak RSS (approximate: includes temporaries and allocator slack).

Bandwidth floor. The machine's sustained copy bandwidth B is measured in the same run (a float64
``copy_`` of ≥ 256 MB, bytes read + written per second, best of several). With W = N·b·ñ (θ's size),
the DRAM traffic a step cannot avoid, read off ``lodo/preconditioners.py``, is

    fwd+hyper = 8·(4·W + W + 2·N·ñ + 2·N·ñ) bytes = 8·N·ñ·(5b + 4) bytes   (= 3072·ñ bytes for b=4, N=16)
        θ read 4 times: forward on m and the transposed pass of ``direction``; forward on g and the
        two-column downward pass of ``hypergradient``;
        the hypergradient written once (W);
        the stored layer inputs of the m-path and the g-path written once (2·N·ñ) and read once (2·N·ñ)
        by the two-column downward pass;
        the ñ-sized working vectors and the n-sized m, g, result are left out (they can stay in cache;
        O(ñ) per layer against θ's b·ñ).
    Adam meta update = 8·7·W bytes (θ, h, m, v read; θ, m, v written).
    LODO step floor = fwd+hyper + Adam + 8·3·n (momentum EMA: m, g read, m written); other O(n) terms
        (flat gradient, x ← x + s) are left out.
    floor time = bytes / B.

Not in the floor but done by the current code (why measured/floor > 1): the row-major downward pass
writes the hypergradient for column 0 and read-modify-writes it for column 1 (+2·W); every layer
writes and re-reads ñ-sized temporaries (gather, product; row-major passes over z b times); the step's
``h.mul_(−α)`` and Keras Adam's √v + ε temporary add ≈ 4·W more; the random gathers are latency-
rather than bandwidth-bound once ñ outgrows the caches.

θ₀ here is random Householder blocks (orthogonal, as the library's SVD init, which takes over a
minute at n = 1e6); the timings do not depend on the values.

Usage: .venv/bin/python bench/lodo_step.py [--quick] [--sizes 1e4 1e5 1e6] [--small-sizes 2 100 ...]
Writes bench/results/lodo_step.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lodo import LODO
from lodo.preconditioners import ROW_MAJOR_FROM_WIDTH, BlockPermutation, hidden_width

BLOCK, DEPTH = 4, 16
LAYOUTS = ("block-major", "row-major")
F64 = 8  # bytes per float64
RESULTS = Path(__file__).resolve().parent / "results" / "lodo_step.json"
MB = 1e6

FORMULAS = {
    "hidden_width": "ñ = 2n + b − (2n mod b)",
    "theta_numbers": "W = N·b·ñ",
    "fwd_hyper_floor_bytes": (
        "8·(4·W + W + 2·N·ñ + 2·N·ñ) = 8·N·ñ·(5b + 4): θ read 4× (forward on m, transposed pass of the "
        "direction, forward on g, two-column downward pass), hypergradient written once, stored layer "
        "inputs of both paths written once and read once"
    ),
    "adam_meta_floor_bytes": "8·7·W: θ, h, m, v read; θ, m, v written",
    "lodo_step_floor_bytes": "fwd_hyper_floor + adam_meta_floor + 8·3·n (momentum EMA)",
    "floor_seconds": "bytes / B, B = measured copy bandwidth (bytes read + written per second)",
    "activation_cache_numbers": "2·N·ñ stored layer inputs (+ ñ for A·Πm)",
    "autograd_tape_numbers": "measured with saved_tensors_hooks at n = 1e4, in units of N·ñ",
    "meta_state_numbers": "3·W + n (θ, Adam exp_avg, exp_avg_sq, momentum)",
}


class BenchBlockPermutation(BlockPermutation):
    """The library's network and layouts with a cheap orthogonal θ₀ (Householder blocks)."""

    def init(self, n, *, dtype, device, generator):
        b, depth = self.block_size, self.depth
        width = hidden_width(n, b)
        perms = torch.stack([torch.randperm(width, generator=generator) for _ in range(depth)])
        v = torch.randn(depth * (width // b), b, 1, generator=generator, dtype=torch.float64)
        v = v / v.norm(dim=1, keepdim=True)
        blocks = torch.eye(b, dtype=torch.float64) - 2.0 * (v @ v.mT)
        del v
        weights = self._ops(width).from_reference(blocks.view(depth, width // b, b, b))
        return weights.to(dtype=dtype, device=device), {"perms": perms.to(device)}


# ---------------------------------------------------------------------------------------------- helpers


def rss_bytes(field: str = "VmRSS") -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (Linux ≥ 4.0); ru_maxrss follows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def others_busy(seconds: float = 0.5) -> float | None:
    """Share of all CPUs other processes use while this one sleeps ``seconds``."""
    before = cpu_snapshot()
    time.sleep(seconds)
    return others_fraction(before, cpu_snapshot(), seconds)


def wait_quiet(max_wait_s: float, threshold: float = 0.15) -> float | None:
    """Waits (at most ``max_wait_s``) until other processes use < ``threshold`` of the CPUs."""
    deadline = time.perf_counter() + max_wait_s
    busy = others_busy()
    while busy is not None and busy > threshold and time.perf_counter() < deadline:
        busy = others_busy(1.0)
    return busy


def copy_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 7) -> float:
    """Best sustained float64 copy bandwidth, bytes read + written per second."""
    src = torch.rand(nbytes // F64, dtype=torch.float64)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * nbytes / best


def pick_reps(first_s: float, budget_s: float, lo: int = 3, hi: int = 25) -> int:
    return max(lo, min(hi, int(budget_s / max(first_s, 1e-9))))


_HZ = os.sysconf("SC_CLK_TCK")
_NCPU = os.cpu_count() or 1


def cpu_snapshot() -> tuple[int, int] | None:
    """(busy jiffies summed over all CPUs, jiffies of this process's threads)."""
    try:
        with open("/proc/stat") as f:
            vals = [
                int(x) for x in f.readline().split()[1:9]
            ]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on
    except (OSError, ValueError, IndexError):
        return None
    return sum(vals) - vals[3] - vals[4], int(fields[11]) + int(fields[12])  # utime + stime


def others_fraction(before, after, wall_s: float) -> float | None:
    """Share of all CPUs that other processes (and steal) used between two snapshots."""
    if before is None or after is None or wall_s <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (_HZ * _NCPU * wall_s))


class Timer:
    """Medians over samples taken while the CPUs were otherwise idle.

    Another process on a 2-core machine makes torch's 2 OpenMP threads wait on each other, which
    slows a step many times over; a sample during which other processes used ≥ ``threshold`` of
    the CPUs (from /proc/stat, jiffy resolution) is discarded and retaken, for up to
    ``max_wait_s``. Short calls are repeated within a sample so that a sample lasts ≥ 0.1 s.
    """

    def __init__(self, budget_s: float, threshold: float, max_wait_s: float):
        self.budget_s, self.threshold, self.max_wait_s = budget_s, threshold, max_wait_s

    @staticmethod
    def _call(fn) -> tuple[float, ...]:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        return (wall,) if out is None else tuple(out)

    def clean_call(self, fn) -> tuple[tuple[float, ...], bool]:
        """Calls fn until one call is not disturbed (at most ``max_wait_s``); the fastest call."""
        deadline = time.perf_counter() + self.max_wait_s
        best = None
        while True:
            snap, t0 = cpu_snapshot(), time.perf_counter()
            out = self._call(fn)
            frac = others_fraction(snap, cpu_snapshot(), time.perf_counter() - t0)
            clean = frac is None or frac < self.threshold
            best = out if best is None or out[-1] < best[-1] else best
            if clean or time.perf_counter() > deadline:
                return best, clean

    def measure(
        self, fn, *, warmup: int = 1, first_s: float | None = None, lo: int = 3, hi: int = 25
    ) -> dict:
        """``fn()`` returns None (its wall time is taken) or a tuple of durations in seconds."""
        for _ in range(warmup):
            first_s = self._call(fn)[0]
        assert first_s is not None
        per_sample = max(1, math.ceil(0.1 / max(first_s, 1e-7)))  # calls per sample
        reps = pick_reps(first_s * per_sample, self.budget_s, lo, hi)
        deadline = time.perf_counter() + 2 * reps * first_s * per_sample + self.max_wait_s
        clean, dirty = [], []
        while len(clean) < reps and len(clean) + len(dirty) < 4 * reps:
            if (clean or dirty) and time.perf_counter() > deadline:
                break
            snap, t0 = cpu_snapshot(), time.perf_counter()
            sums = None
            for _ in range(per_sample):
                out = self._call(fn)
                sums = out if sums is None else tuple(a + b for a, b in zip(sums, out, strict=True))
            wall = time.perf_counter() - t0
            frac = others_fraction(snap, cpu_snapshot(), wall)
            sample = tuple(x / per_sample for x in sums)
            (clean if frac is None or frac < self.threshold else dirty).append(sample)
        used = clean or dirty
        return {
            "median": [statistics.median(s[i] for s in used) for i in range(len(used[0]))],
            "min": [min(s[i] for s in used) for i in range(len(used[0]))],
            "clean": len(clean),
            "discarded": len(dirty),
            "contaminated": not clean,
            "calls_per_sample": per_sample,
        }


def tensors_in(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v)


def storage_bytes(tensors, exclude=()) -> tuple[int, int]:
    """(floating, integer) bytes of the distinct storages behind ``tensors``, minus ``exclude``'s."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, tuple[int, bool]] = {}
    for t in tensors:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = (s.nbytes(), t.is_floating_point())
    return sum(b for b, f in seen.values() if f), sum(b for b, f in seen.values() if not f)


def autograd_tape_numbers(n: int, layout: str) -> float:
    """Floating numbers autograd saves to differentiate P(θ)m w.r.t. θ, in units of N·ñ."""
    pc = BenchBlockPermutation(BLOCK, DEPTH, layout)
    theta, buffers = pc.init(n, dtype=torch.float64, device="cpu", generator=torch.Generator().manual_seed(0))
    theta.requires_grad_(True)
    m = torch.randn(1, n, dtype=torch.float64)
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pc.apply(theta, buffers, m)
    floating, _ = storage_bytes(saved, exclude=[theta, m])
    return floating / F64 / (DEPTH * hidden_width(n, BLOCK))


def floors(n: int, bandwidth: float) -> dict:
    width = hidden_width(n, BLOCK)
    w = DEPTH * BLOCK * width  # θ's numbers
    # fwd+hyper: θ read 4× (fwd m, transposed pass of direction, fwd g, two-column downward pass),
    # hypergradient written once, 2·N·ñ stored inputs written once and read once.
    fwd_hyper = F64 * (4 * w + w + 2 * DEPTH * width + 2 * DEPTH * width)
    adam = F64 * 7 * w  # θ, h, m, v read; θ, m, v written
    step = fwd_hyper + adam + F64 * 3 * n  # + momentum EMA
    return {
        "fwd_hyper_bytes": fwd_hyper,
        "adam_meta_bytes": adam,
        "lodo_step_bytes": step,
        "fwd_hyper_floor_ms": 1e3 * fwd_hyper / bandwidth,
        "adam_meta_floor_ms": 1e3 * adam / bandwidth,
        "lodo_step_floor_ms": 1e3 * step / bandwidth,
    }


def auto_layout(n: int) -> str:
    return "row-major" if hidden_width(n, BLOCK) >= ROW_MAJOR_FROM_WIDTH else "block-major"


def make_lodo(n: int, layout: str) -> tuple[LODO, torch.nn.Parameter, torch.Tensor]:
    param = torch.nn.Parameter(torch.zeros(n))
    grad = torch.randn(n, generator=torch.Generator().manual_seed(1)) * 1e-3
    param.grad = grad.clone()
    opt = LODO(
        [param], lr=1e-2, meta_lr=1e-3, seed=0, preconditioner=BenchBlockPermutation(BLOCK, DEPTH, layout)
    )
    return opt, param, grad


def time_adam(n: int, timer: Timer) -> dict:
    param = torch.nn.Parameter(torch.zeros(n))
    param.grad = torch.randn(n, generator=torch.Generator().manual_seed(1)) * 1e-3
    adam = torch.optim.Adam([param], lr=1e-3)
    return timer.measure(adam.step, warmup=3, lo=10, hi=100)


# ---------------------------------------------------------------------------------------------- benches


def bench_config(
    n: int, layout: str, args, timer: Timer, bandwidth: float, adam: dict, tape_units: dict
) -> dict:
    width = hidden_width(n, BLOCK)
    row: dict = {"n": n, "layout": layout, "width": width, "auto_picks": auto_layout(n) == layout}
    gc.collect()
    rss_before = rss_bytes()
    opt, _, grad = make_lodo(n, layout)
    peak_reset = reset_peak_rss()
    opt.step()  # step 0: direction only; allocates the cache

    state, pc, cache = opt.meta_state, opt.preconditioner, opt._cache
    theta, m = state["theta"], state["momentum"]
    buffers = {k: state[k] for k in state["buffer_keys"]}
    g = grad.to(torch.float64)

    def pieces():  # in a step's order: hypergradient, then direction
        t0 = time.perf_counter()
        pc.hypergradient(theta, buffers, m, g, cache)
        t1 = time.perf_counter()
        pc.direction(theta, buffers, m, cache)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, t2 - t0

    pieces()  # warm-up
    warm = timer.clean_call(pieces)[0][2]  # an undisturbed second call decides the skip
    if warm > args.skip_seconds:
        row.update(skipped=f"warm-up fwd+hyper took {warm:.1f} s > {args.skip_seconds:g} s", warmup_s=warm)
        return row  # the caller collects the optimizer
    lo = 2 if n >= 10**6 else 3
    res = timer.measure(pieces, warmup=0, first_s=warm, lo=lo)
    row["hyper_ms"], row["forward_ms"], row["fwd_hyper_ms"] = (1e3 * t for t in res["median"])
    row["fwd_hyper_min_ms"] = 1e3 * res["min"][2]
    row["samples_pieces"] = {k: res[k] for k in ("clean", "discarded", "contaminated")}

    # The pieces loop has warmed every buffer the step uses; a warm-up step only below 1e6.
    res = timer.measure(opt.step, warmup=1 if n < 10**6 else 0, first_s=warm, lo=lo)
    row["lodo_step_ms"], row["lodo_step_min_ms"] = 1e3 * res["median"][0], 1e3 * res["min"][0]
    row["samples_step"] = {k: res[k] for k in ("clean", "discarded", "contaminated")}
    row["discarded"] = row["samples_pieces"]["discarded"] + row["samples_step"]["discarded"]
    row["contaminated"] = row["samples_pieces"]["contaminated"] or row["samples_step"]["contaminated"]

    # Memory: activations in the cache (distinct floating storages other than θ), plan indices.
    act, idx = storage_bytes(tensors_in(cache), exclude=[theta, cache["grad"]])
    row["activation_cache_MB"] = act / MB
    row["activation_stored_inputs_MB"] = cache["pairs"].nbytes / MB
    row["plan_index_MB"] = idx / MB
    row["tape_MB"] = tape_units[layout] * DEPTH * width * F64 / MB
    row["meta_state_MB"] = sum(state[k].nbytes for k in ("theta", "exp_avg", "exp_avg_sq", "momentum")) / MB
    row["perm_buffers_MB"] = sum(b.nbytes for b in buffers.values()) / MB
    peak = peak_rss_bytes()
    row["peak_rss_growth_MB"] = (peak - rss_before) / MB if rss_before is not None else None
    row["peak_rss_reset"] = peak_reset

    row["adam_step_ms"] = 1e3 * adam["median"][0]
    row["lodo_over_adam"] = row["lodo_step_ms"] / row["adam_step_ms"]
    row.update(floors(n, bandwidth))
    row["fwd_hyper_over_floor"] = row["fwd_hyper_ms"] / row["fwd_hyper_floor_ms"]
    row["step_over_floor"] = row["lodo_step_ms"] / row["lodo_step_floor_ms"]
    return row


def bench_small(n: int, layout: str, timer: Timer) -> dict:
    opt, _, _ = make_lodo(n, layout)
    opt.step()
    return timer.measure(opt.step, warmup=3, lo=5, hi=50)


def crossover(auto_rows: list[dict]) -> dict:
    """Where row-major starts to win for good, and a width threshold interpolated in log-space."""
    rows = [r for r in auto_rows if r["block_major_ms"] is not None and r["row_major_ms"] is not None]
    rows.sort(key=lambda r: r["width"])
    first = None  # index of the first size from which row-major wins at every larger size
    for i in range(len(rows) - 1, -1, -1):
        if rows[i]["row_major_ms"] < rows[i]["block_major_ms"]:
            first = i
        else:
            break
    if first is None:
        return {"suggested_width": None, "note": "row-major never wins at the largest sizes measured"}
    if first == 0:
        return {"suggested_width": rows[0]["width"], "note": "row-major wins at every size measured"}
    lo, hi = rows[first - 1], rows[first]
    r_lo = math.log(lo["row_major_ms"] / lo["block_major_ms"])  # ≥ 0
    r_hi = math.log(hi["row_major_ms"] / hi["block_major_ms"])  # < 0
    frac = r_lo / (r_lo - r_hi) if r_lo != r_hi else 0.5
    est = math.exp(math.log(lo["width"]) + frac * (math.log(hi["width"]) - math.log(lo["width"])))
    return {
        "between_widths": [lo["width"], hi["width"]],
        "interpolated_width": round(est),
        "suggested_width": 2 ** round(math.log2(est)),
        "current_consistent": lo["width"] < ROW_MAJOR_FROM_WIDTH <= hi["width"],
    }


# ---------------------------------------------------------------------------------------------- output


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def main_table(rows: list[dict]) -> Table:
    t = Table(title="LODO step cost (b=4, N=16, float64 meta-state; medians)")
    cols = [
        "n", "layout", "fwd ms", "hyper ms", "fwd+hyper ms", "LODO step ms", "Adam step ms", "LODO/Adam",
        "floor ms (fwd+hyper)", "meas/floor", "step floor ms", "act MB (cache)", "tape MB (autograd)",
        "meta-state MB", "ΔpeakRSS MB (≈)", "noisy samples dropped",
    ]  # fmt: skip
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        if "skipped" in r:
            t.add_row(f"{r['n']:.0e}", r["layout"], f"skipped: {r['skipped']}", *[""] * (len(cols) - 3))
            continue
        t.add_row(
            f"{r['n']:.0e}",
            r["layout"] + (" (auto)" if r["auto_picks"] else ""),
            fmt(r["forward_ms"]),
            fmt(r["hyper_ms"]),
            fmt(r["fwd_hyper_ms"]),
            fmt(r["lodo_step_ms"]),
            fmt(r["adam_step_ms"], ".3f"),
            fmt(r["lodo_over_adam"], ".0f"),
            fmt(r["fwd_hyper_floor_ms"]),
            fmt(r["fwd_hyper_over_floor"], ".2f"),
            fmt(r["lodo_step_floor_ms"]),
            fmt(r["activation_cache_MB"]),
            fmt(r["tape_MB"]),
            fmt(r["meta_state_MB"]),
            fmt(r["peak_rss_growth_MB"], ".0f"),
            f"{r['discarded']}" + (" (all noisy!)" if r["contaminated"] else ""),
        )
    return t


def auto_table(rows: list[dict], cross: dict) -> Table:
    t = Table(title=f"Layout rule: auto = row-major when ñ ≥ ROW_MAJOR_FROM_WIDTH = {ROW_MAJOR_FROM_WIDTH:,}")
    for c in ("n", "ñ", "block-major step ms", "row-major step ms", "faster", "auto picks", "auto right?"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(
            f"{r['n']:,}",
            f"{r['width']:,}",
            fmt(r["block_major_ms"], ".3f"),
            fmt(r["row_major_ms"], ".3f"),
            r["faster"] or "—",
            r["auto"],
            {True: "yes", False: "NO", None: "—"}[r["auto_right"]] + (" (noisy)" if r["noisy"] else ""),
        )
    if cross.get("interpolated_width"):
        lo, hi = cross["between_widths"]
        t.caption = (
            f"row-major wins from ñ between {lo:,} and {hi:,} on (log-interpolated ñ ≈ "
            f"{cross['interpolated_width']:,}; nearest power of two {cross['suggested_width']:,})"
        )
    elif cross.get("note"):
        t.caption = cross["note"]
    return t


def parse_sizes(values: list[str]) -> list[int]:
    return [int(float(v)) for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only n = 1e4 and 1e5")
    parser.add_argument("--sizes", nargs="+", default=["1e4", "1e5", "1e6"], help="main sizes n")
    parser.add_argument("--small-sizes", nargs="+", default=["2", "100", "300", "1000", "3000", "8000"],
                        help="sizes for the layout-crossover table (LODO.step only)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per timed quantity (≥ 3 reps)")
    parser.add_argument("--skip-seconds", type=float, default=20.0,
                        help="skip a config whose warm-up fwd+hyper takes longer")  # fmt: skip
    parser.add_argument(
        "--noise-threshold",
        type=float,
        default=0.1,
        help="drop a sample during which other processes used this share of the CPUs",
    )
    parser.add_argument("--max-wait", type=float, default=60.0,
                        help="seconds a measurement may spend retaking noisy samples")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [10**4, 10**5] if args.quick else parse_sizes(args.sizes)
    small = parse_sizes(args.small_sizes)

    torch.set_num_threads(args.threads)
    console = Console(width=240)
    started = time.perf_counter()
    load_start = os.getloadavg()
    busy_start = wait_quiet(args.max_wait, args.noise_threshold)
    bandwidth = copy_bandwidth()
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load avg {load_start[0]:.2f}, others busy {fmt(busy_start and 100 * busy_start, '.0f')}%; "
        f"copy bandwidth B = {bandwidth / 1e9:.2f} GB/s (read + write)"
    )
    timer = Timer(args.budget, args.noise_threshold, args.max_wait)
    tape_units = {lay: autograd_tape_numbers(10**4, lay) for lay in LAYOUTS}

    rows = []
    for n in sizes:
        adam = time_adam(n, timer)
        for layout in LAYOUTS:
            row = bench_config(n, layout, args, timer, bandwidth, adam, tape_units)
            row["samples_adam"] = {k: adam[k] for k in ("clean", "discarded", "contaminated")}
            rows.append(row)
            gc.collect()  # free this config's optimizer before the next one
            done = (
                row.get("skipped")
                or f"fwd+hyper {row['fwd_hyper_ms']:.1f} ms, step {row['lodo_step_ms']:.1f} ms"
            )
            console.print(f"  n={n:.0e} {layout}: {done}  [{time.perf_counter() - started:.0f} s]")

    # Layout crossover: LODO.step for both layouts at the small sizes, plus the main sizes.
    step_ms = {(r["n"], r["layout"]): r.get("lodo_step_ms") for r in rows}
    noisy = {(r["n"], r["layout"]) for r in rows if r.get("contaminated")}
    small_timer = Timer(min(args.budget, 1.0), args.noise_threshold, args.max_wait)
    small_samples = {}
    for n in small:
        for layout in LAYOUTS:
            res = bench_small(n, layout, small_timer)
            step_ms[(n, layout)] = 1e3 * res["median"][0]
            small_samples[f"{n}/{layout}"] = {k: res[k] for k in ("clean", "discarded", "contaminated")}
            if res["contaminated"]:
                noisy.add((n, layout))
    auto_rows = []
    for n in sorted({k[0] for k in step_ms}):
        bm, rm = step_ms.get((n, "block-major")), step_ms.get((n, "row-major"))
        faster = None if bm is None or rm is None else ("row-major" if rm < bm else "block-major")
        auto = auto_layout(n)
        auto_rows.append({
            "n": n, "width": hidden_width(n, BLOCK), "block_major_ms": bm, "row_major_ms": rm,
            "faster": faster, "auto": auto, "auto_right": None if faster is None else faster == auto,
            "noisy": (n, "block-major") in noisy or (n, "row-major") in noisy,
        })  # fmt: skip
    cross = crossover(auto_rows)

    console.print(main_table(rows))
    console.print(
        f"copy bandwidth B = {bandwidth / 1e9:.2f} GB/s; floor(fwd+hyper) = 8·N·ñ·(5b+4) B / B; "
        f"floor(step) adds Adam 8·7·W and momentum 8·3·n. act = 2·N·ñ stored inputs + ñ (A·Πm); "
        f"autograd's saved tensors for P(θ)m measured at n=1e4: "
        + ", ".join(f"{lay} {u:.2f}·N·ñ" for lay, u in tape_units.items())
        + ". ΔpeakRSS ≈ peak RSS during the config − RSS before it (includes temporaries)."
    )
    console.print(auto_table(auto_rows, cross))
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    console.print(f"total {elapsed:.0f} s; load avg start {load_start[0]:.2f}, end {load_end[0]:.2f}")

    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    out = {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_start": load_start,
            "load_avg_end": load_end,
        },
        "config": {
            "block_size": BLOCK,
            "depth": DEPTH,
            "meta_dtype": "float64",
            "param_dtype": "float32",
            "row_major_from_width": ROW_MAJOR_FROM_WIDTH,
            "args": {k: str(v) for k, v in vars(args).items()},
        },
        "copy_bandwidth_bytes_per_s": bandwidth,
        "others_busy_at_start": busy_start,
        "small_size_samples": small_samples,
        "formulas": FORMULAS,
        "autograd_saved_numbers_per_N_width": tape_units,
        "results": rows,
        "layout_crossover": {"rows": auto_rows, **cross},
        "elapsed_s": elapsed,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
