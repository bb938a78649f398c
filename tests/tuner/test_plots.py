"""The figures' rules (smoothing, log axes, noisy or not, decoded elite means) against independent
computations, and the figures themselves: written as PNGs, with their reference line and window."""

from __future__ import annotations

import math

import numpy as np
import pytest

import schedules
from tuner import ga, plots
from tuner.executors import LocalExecutor
from tuner.rundir import RunDir
from tuner.runtime import JobContext
from tuner.strategies.ga import TuneConfig, tune
from tuner.summary import window
from tuner.trial import TrialResult, TrialSpec, run_trial

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOWL_OPTIMUM = 7.411847253913  # ½σ²tr(H) at n = 100, σ = 1 (tasks/noisy_quadratic_bowl.py)
# the paper's Table 6 values on Rosenbrock, as `lodotune evaluate rosenbrock` uses them
ROSENBROCK_TABLE_6 = {
    "adam": {"lr": 0.9704, "beta1": 0.864, "beta2": 0.99804},
    "momentum": {"lr": 0.0987, "momentum": 0.9359},
    "yogi": {"lr": 0.2991, "beta1": 0.9273, "beta2": 0.998787},
}


def _result(losses, *, task="noisy-quadratic-bowl", optimizer="adam", seed=0, steps=None, metrics=None, **kw):
    spec = TrialSpec(task, optimizer, {}, seed=seed, steps=steps or len(losses))
    return TrialResult(spec, list(losses), kw.pop("diverged", False), 1.0, 1.0, metrics or {}, **kw)


def _noisy_bowl_like(seed: int, length: int, level: float) -> list[float]:
    """A transient from 40 down to ``level``, times lognormal noise of ~10%."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return list((level + 30 * np.exp(-t / 20)) * np.exp(0.1 * rng.standard_normal(length)))


def _bowl_runs(steps: int = 2000) -> dict[str, list[TrialResult]]:
    metrics = {"optimal_loss": BOWL_OPTIMUM}
    return {
        name: [
            _result(_noisy_bowl_like(10 * k + s, steps, level), optimizer=name, seed=s, metrics=metrics)
            for s in range(3)
        ]
        for k, (name, level) in enumerate({"adam": 15.2, "yogi": 16.3, "lodo": 10.3}.items())
    }


def _labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


# --- smoothing ---------------------------------------------------------------------------------


def test_the_running_mean_is_the_mean_of_a_centred_window_narrowed_at_the_start():
    values = np.random.default_rng(1).standard_normal(57)
    h = 4
    expected = [np.mean(values[t - min(h, t) : t + min(h, t) + 1]) for t in range(len(values) - h)]
    smoothed = plots.running_mean(values, h)
    assert smoothed[: len(values) - h] == pytest.approx(np.array(expected), abs=1e-12)
    assert np.isnan(smoothed[len(values) - h :]).all()  # the window would run past the end
    # past the start it is numpy's full-window convolution
    full = np.convolve(values, np.ones(2 * h + 1) / (2 * h + 1), mode="valid")
    assert smoothed[h:-h] == pytest.approx(full, abs=1e-12)


def test_a_non_finite_value_blanks_exactly_the_windows_that_hold_it():
    values = np.arange(40, dtype=float)
    values[20] = np.nan
    smoothed = plots.running_mean(values, 3)
    assert np.flatnonzero(np.isnan(smoothed)).tolist() == [17, 18, 19, 20, 21, 22, 23, 37, 38, 39]
    assert smoothed[10] == pytest.approx(10.0) and smoothed[30] == pytest.approx(30.0)
    assert plots.running_mean(np.array([]), 3).size == 0


def test_the_window_is_about_one_percent_of_the_run_and_never_under_five():
    assert 2 * plots.smoothing_half_width(100_000) + 1 == 1001
    assert 2 * plots.smoothing_half_width(10_000) + 1 == 101
    assert 2 * plots.smoothing_half_width(200) + 1 == 5
    assert 2 * plots.smoothing_half_width(3) + 1 == 5


# --- log axes ----------------------------------------------------------------------------------


def test_a_log_axis_is_wanted_past_one_and_a_half_decades_of_positive_values():
    assert not plots.spans_decades([1.0, 31.0])  # 10^1.5 ≈ 31.6
    assert plots.spans_decades([1.0, 32.0])
    assert plots.spans_decades([1e-4, 3.0, math.nan, math.inf])  # non-finite values are ignored
    assert not plots.spans_decades([0.0, 100.0]) and not plots.spans_decades([-1.0, 100.0])
    assert not plots.spans_decades([])


def test_x_goes_log_for_long_runs_that_move_early():
    t = np.arange(1, 20_001, dtype=float)
    power_law = 1 / t
    steady_exponential = np.exp(-t / 4000)
    transient_then_floor = 15 + 90 * np.exp(-t / 30)
    assert plots.moves_early(power_law, 20_000) and plots.wants_log_x([power_law], 20_000)
    assert not plots.moves_early(steady_exponential, 20_000)
    assert not plots.wants_log_x([steady_exponential], 20_000)
    assert plots.wants_log_x([steady_exponential, transient_then_floor], 20_000)
    # the same early shape on a short run stays linear
    assert plots.moves_early(power_law[:5000], 5000) and not plots.wants_log_x([power_law[:5000]], 5000)


# --- noisy or deterministic ----------------------------------------------------------------------


def test_noise_around_a_level_is_noisy_a_descent_is_not():
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    noise = 15 * np.exp(0.1 * rng.standard_normal(2000))
    assert plots.tortuosity(noise) > 100 and plots.is_noisy([noise])
    descent = np.exp(-t / 300)
    assert plots.tortuosity(descent) == pytest.approx(1.0)
    assert not plots.is_noisy([descent])
    assert plots.is_noisy([descent, noise])  # one noisy optimizer makes the figure noisy
    assert math.isnan(plots.tortuosity(noise[:30]))  # 15 points in the second half: too few
    assert plots.tortuosity(np.full(100, 3.0)) == 0.0


def test_real_rosenbrock_curves_are_deterministic_and_a_real_bowl_curve_is_noisy():
    rosenbrock = [
        run_trial(TrialSpec("rosenbrock", name, values, seed=0, steps=200)).losses
        for name, values in ROSENBROCK_TABLE_6.items()
    ]
    assert all(plots.tortuosity(np.array(c)) < plots.NOISY_TORTUOSITY for c in rosenbrock)
    assert not plots.is_noisy([np.array(c) for c in rosenbrock])
    bowl = run_trial(TrialSpec("noisy-quadratic-bowl", "momentum", {"lr": 1.394, "momentum": 0.529}, 0, 1000))
    assert plots.is_noisy([np.array(bowl.losses)])


# --- curves.png ---------------------------------------------------------------------------------


def test_a_noisy_figure_smooths_marks_the_optimum_and_the_window_and_zooms(tmp_path):
    runs = _bowl_runs(2000)
    fig = plots.curves_figure(runs, title="bowl")
    overview, zoom = fig.axes
    legend = overview.get_legend()
    assert "running mean over 21 evaluations" in legend.get_title().get_text()
    assert "Newton optimum 7.41" in _labels(overview)
    (reference,) = [line for line in overview.get_lines() if line.get_label() == "Newton optimum 7.41"]
    assert reference.get_ydata()[0] == pytest.approx(BOWL_OPTIMUM)
    w = window(2000)
    (span,) = [p for p in overview.patches if p.get_label() == f"reported mean: evals {w.first}–{w.last}"]
    assert (span.get_x(), span.get_x() + span.get_width()) == (w.first - 0.5, w.last + 0.5)
    # the drawn line is the running mean of the per-evaluation median
    adam = np.median(np.array([r.losses for r in runs["adam"]]), axis=0)
    (line,) = [line for line in overview.get_lines() if line.get_label() == "adam"]
    expected = plots.running_mean(adam, plots.smoothing_half_width(2000))
    assert np.allclose(line.get_ydata(), expected, equal_nan=True) and np.isfinite(expected[:-10]).all()
    # the zoom shows the last quarter, its y-range fitted to the levels and the optimum
    assert zoom.get_xlim() == (1500, 2000)
    assert zoom.get_ylim()[0] < BOWL_OPTIMUM and zoom.get_ylim()[1] < 25
    assert overview.get_xscale() == "linear"  # 2000 evaluations: not a long run
    plots.plot_curves(runs, tmp_path / "curves.png", title="bowl")
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_deterministic_figure_has_plain_curves_log_y_and_no_zoom():
    t = np.arange(200)
    runs = {
        "adam": [_result(np.exp(-t / 20) * 3, task="rosenbrock")],
        "lodo": [_result(np.exp(-t / 40) * 3, task="rosenbrock", optimizer="lodo")],
    }
    fig = plots.curves_figure(runs, title="rosenbrock")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_legend().get_title().get_text() == ""
    assert not any(label.startswith("Newton") for label in _labels(ax))  # no optimal_loss metric
    assert "reported mean: evals 181–199" in _labels(ax)
    (adam,) = [line for line in ax.get_lines() if line.get_label() == "adam"]
    assert adam.get_ydata() == pytest.approx(np.exp(-t / 20) * 3)
    # each reported mean (results.md's: evaluations 181–199) written at the right edge
    reported = [f"{np.mean(np.exp(-t[180:199] / tau) * 3):.4g}" for tau in (20, 40)]
    assert [text.get_text() for text in ax.texts] == reported


def test_failed_optimizers_keep_their_legend_notes_and_divergence_does_not_squash_the_range():
    t = np.arange(200)
    exploding = [*np.exp(t[:150] / 5.0), math.inf]
    runs = {
        "adam": [
            _result(3 * np.exp(-t / 20), task="rosenbrock"),
            _result(exploding, task="rosenbrock", diverged=True),
        ],
        "yogi": [_result([], task="rosenbrock", optimizer="yogi", error="worker lost", steps=200)],
    }
    fig = plots.curves_figure(runs, title="x")
    (ax,) = fig.axes
    assert "adam (1/2 diverged)" in _labels(ax)
    assert "yogi: no losses (1/1 errors)" in _labels(ax)
    assert ax.get_ylim()[1] < 3 * plots.DIVERGENCE_HEADROOM * 2  # the exploding run would reach 1e12


def test_with_no_losses_at_all_the_figure_says_so(tmp_path):
    runs = {"adam": [_result([], error="boom", steps=200)]}
    fig = plots.curves_figure(runs, title="x")
    assert any(text.get_text() == "no run recorded a loss" for text in fig.axes[0].texts)
    plots.plot_curves(runs, tmp_path / "c.png", title="x")
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_reference_level_is_the_optimal_loss_metric():
    runs = {"adam": [_result([10.0] * 50, metrics={"optimal_loss": 7.411847, "loss": 3.0})]}
    assert plots.reference_levels(runs) == [("Newton optimum 7.41", pytest.approx(7.411847))]
    assert plots.reference_levels({"adam": [_result([1.0] * 50, metrics={"loss": 3.0})]}) == []


# --- search.png ---------------------------------------------------------------------------------


def _generation_records(generations: int = 2, population: int = 6) -> list[dict]:
    """Records shaped as the GA writes them (tuner.strategies.ga), from the real ask/tell on
    Adam's search space, with a made-up fitness (and two diverged individuals in generation 0)."""
    space = schedules.space_for("adam")
    state = ga.init(space, {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999}, job_seed=3)
    records = []
    for g in range(generations):
        individuals = ga.ask(state, space, sigma=1.0, population=population)
        fitnesses = [abs(math.log(ind.values["lr"]) + 3) + 0.1 for ind in individuals]
        if g == 0:
            fitnesses[1] = fitnesses[4] = math.inf
        told = ga.tell(state, space, individuals, fitnesses)
        records.append(
            {
                "generation": g,
                "population": [
                    {
                        "index": ind.index,
                        "coords": ind.coords,
                        "values": ind.values,
                        "fitness": f if math.isfinite(f) else None,
                    }
                    for ind, f in zip(individuals, told.fitnesses, strict=True)
                ],
                "elite": told.elite,
                "elite_mean": {"coords": dict(told.state.mean), "values": space.decode(told.state.mean)},
            }
        )
        state = told.state
    return records


def test_the_elite_means_are_the_decoded_means_of_the_elites_values():
    records = _generation_records()
    means = plots.elite_means(records)
    for g, record in enumerate(records):
        elite = [record["population"][i]["values"] for i in record["elite"]]
        # by hand: lr is averaged as ln lr (a geometric mean), a decay β as ln(1 − β)
        lr = math.exp(sum(math.log(v["lr"]) for v in elite) / len(elite))
        beta2 = 1 - math.exp(sum(math.log(max(1e-30, 1 - v["beta2"])) for v in elite) / len(elite))
        assert means["lr"][g] == pytest.approx(lr, rel=1e-12)
        assert means["beta2"][g] == pytest.approx(beta2, rel=1e-12)
    assert set(means) == {"lr", "beta1", "beta2"}


def test_the_transform_is_read_off_the_records():
    records = _generation_records()
    assert [plots.infer_transform(records, n) for n in ("lr", "beta1", "beta2")] == ["log", "log1m", "log1m"]
    space = schedules.space_for("adam", decay_transform="logit")
    coords = space.encode({"lr": 0.01, "beta1": 0.9, "beta2": 0.999})
    logit = [{"generation": 0, "population": [{"coords": coords, "values": space.decode(coords)}]}]
    assert plots.infer_transform(logit, "beta1") == "logit"
    odd = [{"generation": 0, "population": [{"coords": {"x": 1.0}, "values": {"x": 5.0}}]}]
    assert plots.infer_transform(odd, "x") is None


def test_non_finite_fitness_is_counted_not_dropped():
    fitness = plots.generation_fitness(_generation_records())
    assert [g.non_finite for g in fitness] == [2, 0]
    assert [len(g.finite) for g in fitness] == [4, 6]


def test_decay_ticks_cover_the_decades_of_one_minus_the_values():
    assert plots.decay_ticks([0.9, 0.9995]) == pytest.approx([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999])
    assert plots.decay_ticks([0.0, 0.95]) == pytest.approx([0.0, 0.5, 0.9, 0.99])
    assert plots.decay_ticks([0.5, 0.9999995]) == pytest.approx([0.0, *(1 - 10.0**-k for k in range(1, 8))])


def test_the_search_figure_has_a_panel_per_hyperparameter_and_the_fitness(tmp_path):
    records = _generation_records()
    fig = plots.search_figure([records, records], title="t", labels=["a", "b"])
    *panels, fitness = fig.axes
    assert [ax.get_title() for ax in panels] == ["lr (log)", "beta1 (log1m)", "beta2 (log1m)"]
    assert panels[0].get_yscale() == "log" and panels[1].get_yscale() == "function"
    lines = [line for line in panels[0].get_lines() if line.get_label() == "a"]
    assert lines[0].get_ydata() == pytest.approx(plots.elite_means(records)["lr"])
    assert fitness.get_title().startswith("fitness per generation: 4 non-finite")
    assert [t.get_text() for t in fitness.texts] == ["2✗", "2✗"]  # generation 0 of each study
    assert _labels(fitness) == ["a", "b"]
    with pytest.raises(ValueError, match="Invalid labels"):
        plots.search_figure([records], title="t", labels=["a", "b"])
    plots.plot_search([records], tmp_path / "search.png", title="t")
    assert (tmp_path / "search.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_fitness_axis_stops_at_a_thousand_times_the_90th_percentile():
    assert plots.fitness_ceiling([1.0] * 20 + [1e170]) == pytest.approx(1e3)
    assert plots.fitness_ceiling([1.0] * 20 + [999.0]) is None  # nothing above it: no ceiling
    assert plots.fitness_ceiling([math.inf]) is None


def test_a_generation_with_one_huge_fitness_draws_it_at_the_ceiling_and_counts_it():
    records = _generation_records(population=24)
    records[1]["population"][0]["fitness"] = 1e170
    *_, fitness = plots.search_figure([records], title="t").axes
    ceiling = plots.fitness_ceiling(
        [i["fitness"] for r in records for i in r["population"] if i["fitness"] is not None]
    )
    assert fitness.get_yscale() == "log" and fitness.get_ylim()[1] == pytest.approx(3 * ceiling)
    assert f"1 above {ceiling:.3g}" in fitness.get_title()
    markers = [line for line in fitness.get_lines() if line.get_marker() == "^"]
    assert [list(line.get_ydata()) for line in markers] == [[ceiling]]


def test_a_ga_run_writes_search_png_beside_its_generations(tmp_path):
    plan = schedules.schedule_for("rosenbrock").scaled(0.1).with_overrides(2, 4)
    config = TuneConfig("rosenbrock", "adam", plan, schedules.space_for("adam"), seed=1)
    tune(config, JobContext(RunDir(tmp_path), executor_override=LocalExecutor()))
    assert (tmp_path / "generations" / "001.json").exists()
    assert RunDir(tmp_path).search_plot_path.read_bytes().startswith(PNG_SIGNATURE)


def test_a_noisy_figure_without_a_reference_level_still_zooms():
    # a noisy task whose metrics carry no optimal_loss (the studies and service runs hit this)
    runs = _bowl_runs(2000)
    for results in runs.values():
        for result in results:
            result.metrics.pop("optimal_loss", None)
    overview, zoom = plots.curves_figure(runs, title="bowl").axes
    assert "Newton optimum 7.41" not in _labels(overview)
    low, high = zoom.get_ylim()
    assert zoom.get_xlim() == (1500, 2000) and 0 < low < high


def test_runs_of_different_lengths_whose_means_lie_outside_the_zoom_still_render(tmp_path):
    """An ASHA job's final runs: each optimizer its own length. The shorter runs' reported means
    lie far above the zoom on the longest run's last quarter; their labels are clipped there
    instead of being drawn off the canvas (which overflowed FreeType's raster)."""
    long = [math.exp(-t / 20) * 1e-2 + 1e-6 * (1 + 0.1 * math.sin(t)) for t in range(360)]
    short = [(2.0 - t / 60) * (1 + 0.05 * math.sin(3 * t)) for t in range(50)]
    by_optimizer = {
        "adamqlr": [_result(long, optimizer="adamqlr", seed=s) for s in range(2)],
        "sgd": [_result([v * (1 + 0.01 * s) for v in short], optimizer="sgd", seed=s) for s in range(2)],
    }
    plots.plot_curves(by_optimizer, tmp_path / "curves.png", title="different lengths")
    assert (tmp_path / "curves.png").stat().st_size > 0
