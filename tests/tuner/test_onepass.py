"""The one-pass strategy: its hypergradient on small exactly solvable problems, and runs on digits-mlp."""

from __future__ import annotations

import json
import math

import numpy as np
import pydantic
import pytest
import torch

import lodo
import tasks as task_registry
from tasks._rng import torch_generator
from tuner import events as ev
from tuner import final, ga
from tuner.rundir import RunDir, read_json
from tuner.runtime import JobContext
from tuner.specs import TuneJob
from tuner.strategies import onepass
from tuner.strategies.onepass import (
    EPISODES_FILE,
    PAPER_STEPS_SOURCE,
    STRATEGY,
    OnePassConfig,
    OnePassOptions,
    RawHyperparameters,
    bootstrap_mean,
    evaluate_onepass,
    implicit_hypergradient,
    resolve_steps,
    run_episode,
    sgd_update,
    summarize_method,
    tune_onepass,
)
from tuner.summary import bootstrap_median

COMMON_KEYS = {"strategy", "task", "optimizer", "hyperparameters", "transforms", "settings", "job_seed"}
COMMON_KEYS |= {"task_options", "versions"}


def regression(seed: int, n: int = 24, d: int = 3):
    """Linear least squares: ½·mean((Xw + c − y)²) on a train and a validation split (float64)."""
    g = torch.Generator().manual_seed(seed)
    x_train, x_val = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g).double(),
    )
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    y_train = x_train @ w_true + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    y_val = x_val @ w_true + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)

    def loss(x, y):
        return lambda ws: 0.5 * ((x @ ws[0] + ws[1] - y) ** 2).mean()

    return loss(x_train, y_train), loss(x_val, y_val), x_train, y_train


def raw(lr: float, weight_decay: float, momentum: float, shapes=None) -> RawHyperparameters:
    values = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum}
    return RawHyperparameters(values, shapes, torch.float64, "cpu")


def start(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(3, generator=g, dtype=torch.float64), torch.randn((), generator=g).double()]
    buffers = [0.5 * torch.randn(3, generator=g, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)]
    return weights, buffers


def central_difference(f, x: float, h: float = 1e-5) -> float:
    return (f(x + h) - f(x - h)) / (2 * h)


def test_lookback_one_is_the_exact_one_step_derivative_in_each_hyperparameter():
    train, validation, *_ = regression(0)
    weights, buffers = start()
    hp = raw(0.1, 1e-2, 0.5)
    step = implicit_hypergradient(train, validation, weights, buffers, hp, lookback=1)

    w = [t.clone().requires_grad_() for t in weights]
    grads = torch.autograd.grad(train(w), w)

    def validation_after_step(x: float, y: float, z: float) -> float:
        lr, wd, mu = 10**x, 10**y, 1 / (1 + math.exp(-z))
        new = [wi - lr * (mu * b + g + wd * wi) for wi, g, b in zip(weights, grads, buffers, strict=True)]
        return float(validation(new))

    x, y, z = (float(t.detach()) for t in hp.tensors())
    expected = [
        central_difference(lambda v: validation_after_step(v, y, z), x),
        central_difference(lambda v: validation_after_step(x, v, z), y),
        central_difference(lambda v: validation_after_step(x, y, v), z),
    ]
    assert [float(g) for g in step.hypergradient] == pytest.approx(expected, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("per_parameter", [False, True])
def test_lookback_five_is_the_truncated_neumann_series_it_defines(per_parameter):
    train, validation, *_ = regression(2)
    weights, buffers = start(3)
    shapes = [t.shape for t in weights] if per_parameter else None
    hp = raw(0.05, 1e-3, 0.7, shapes)
    step = implicit_hypergradient(train, validation, weights, buffers, hp, lookback=5)

    # the same quantity from dense matrices: −v₀ᵀ Σ_{j<5} (I − ∂u/∂w)ʲ ∂u/∂λ
    w = [t.clone().requires_grad_() for t in weights]
    grads = torch.autograd.grad(train(w), w, create_graph=True)
    u, _ = sgd_update(w, grads, buffers, hp)
    u_flat = torch.cat([ui.reshape(-1) for ui in u])
    rows = [torch.autograd.grad(ui, w + hp.tensors(), retain_graph=True, allow_unused=True) for ui in u_flat]

    def dense(parts, tensors):
        return torch.cat(
            [
                (p if p is not None else torch.zeros_like(t)).reshape(-1)
                for p, t in zip(parts, tensors, strict=True)
            ]
        )

    du_dw = torch.stack([dense(r[: len(w)], w) for r in rows])
    du_dlam = torch.stack([dense(r[len(w) :], hp.tensors()) for r in rows])
    w_next = [t.detach().requires_grad_() for t in step.weights]
    v0 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(validation(w_next), w_next)])
    eye = torch.eye(len(v0), dtype=torch.float64)
    series = sum(torch.linalg.matrix_power(eye - du_dw, j) for j in range(5))
    expected = -(v0 @ series @ du_dlam)
    got = torch.cat([g.reshape(-1) for g in step.hypergradient])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_long_lookback_matches_the_exact_derivative_at_the_fixed_point():
    """Trained to convergence, the Neumann estimate with a long look-back is the implicit-function
    derivative: it matches differentiating through the whole unrolled run, and (for the weight
    decay, the only hyperparameter that moves the fixed point) finite differences of the validation
    loss at the closed-form optimum."""
    train, validation, x_train, y_train = regression(4)
    lr, momentum, steps = 0.3, 0.2, 600

    def unrolled(log_weight_decay: torch.Tensor):
        hp = RawHyperparameters(
            {"lr": lr, "weight_decay": 1.0, "momentum": momentum}, None, torch.float64, "cpu"
        )
        hp.log_weight_decay = log_weight_decay
        weights = [torch.zeros(3, dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
        buffers = [torch.zeros_like(t) for t in weights]
        for _ in range(steps):
            w = [t if t.requires_grad else t.requires_grad_() for t in weights]
            grads = torch.autograd.grad(train(w), w, create_graph=True)
            u, buffers = sgd_update(w, grads, buffers, hp)
            weights = [wi - ui for wi, ui in zip(w, u, strict=True)]
        return weights, buffers, hp

    log_wd = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    weights, buffers, hp = unrolled(log_wd)
    (through_the_run,) = torch.autograd.grad(validation(weights), log_wd)

    hp.log_weight_decay = log_wd.detach().requires_grad_()
    detached = ([t.detach() for t in weights], [b.detach() for b in buffers])
    step = implicit_hypergradient(train, validation, *detached, hp, lookback=400)
    d_lr, d_wd, d_momentum = (float(g) for g in step.hypergradient)

    def optimum_loss(y: float) -> float:  # minimiser of train + ½ξ‖w‖² (bias included), closed form
        design = torch.cat([x_train, torch.ones(len(x_train), 1, dtype=torch.float64)], dim=1)
        n = len(design)
        solved = torch.linalg.solve(
            design.T @ design / n + 10**y * torch.eye(4).double(), design.T @ y_train / n
        )
        return float(validation([solved[:3], solved[3]]))

    assert d_wd == pytest.approx(float(through_the_run), rel=1e-6)
    assert d_wd == pytest.approx(central_difference(optimum_loss, -1.0), rel=1e-6)
    assert abs(d_lr) < 1e-9 and abs(d_momentum) < 1e-9  # neither moves the fixed point


def test_tune_onepass_writes_the_common_document_and_improves_validation(tmp_path):
    events = []
    config = OnePassConfig(
        "digits-mlp", steps=60, initial={"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5}, seed=3
    )
    document = tune_onepass(config, JobContext(RunDir(tmp_path), emit=events.append))
    assert set(document) >= COMMON_KEYS
    assert document["strategy"] == "onepass"
    assert set(document["hyperparameters"]) == {"lr", "weight_decay", "momentum"}
    assert all(math.isfinite(v) for v in document["hyperparameters"].values())
    assert document["hyperparameters"] != document["initial"]
    assert [type(e) for e in events] == [ev.PhaseStarted] + [ev.Checkpoint] * 6 and events[-1].of == 6
    assert [e.record for e in events[1:]] == document["trajectory"]
    trajectory = document["trajectory"]
    assert [r["step"] for r in trajectory] == list(range(10, 61, 10))
    assert trajectory[-1]["validation_loss"] < trajectory[0]["validation_loss"]
    assert {"test_loss", "test_accuracy", "validation_loss"} <= set(document["metrics"])
    assert (tmp_path / "hyperparameters.json").exists() and (tmp_path / "config.json").exists()
    # the evaluation's settings are in the document too
    assert document["validation"] == document["settings"]["validation"] == "minibatch"
    assert document["settings"]["initialisations"] == 100
    assert document["steps_source"] == document["settings"]["steps_source"] == "given"


def test_per_parameter_learning_rates_spread_out():
    config = OnePassConfig(
        "digits-mlp",
        steps=40,
        per_parameter_lr=True,
        initial={"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5},
    )
    episode = run_episode(config)
    spreads = episode.per_parameter_lr
    assert set(spreads) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}
    assert any(s["min"] < s["max"] for s in spreads.values())


def test_only_the_tuned_hyperparameters_move():
    config = OnePassConfig(
        "digits-mlp",
        steps=30,
        tuned=("weight_decay",),
        initial={"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5},
    )
    final = run_episode(config).final
    assert final["lr"] == pytest.approx(0.02) and final["momentum"] == pytest.approx(0.5)
    assert final["weight_decay"] != pytest.approx(1e-4)


def test_random_starting_values_follow_the_paper_ranges_and_the_seed():
    a, b = OnePassConfig("digits-mlp", seed=1), OnePassConfig("digits-mlp", seed=2)
    assert a.starting_values() == OnePassConfig("digits-mlp", seed=1).starting_values()
    assert a.starting_values() != b.starting_values()
    values = a.starting_values()
    assert 1e-6 <= values["lr"] <= 1e-1 and 1e-7 <= values["weight_decay"] <= 1e-2
    assert 0 < values["momentum"] < 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "nope"}, "Invalid task: 'nope'"),
        ({"steps": 0}, "Invalid steps: 0"),
        ({"update_interval": 0}, "Invalid update_interval: 0"),
        ({"lookback": 0}, "Invalid lookback: 0"),
        ({"meta_lr": 0.0}, "Invalid meta_lr: 0.0"),
        ({"tuned": ("beta",)}, "Invalid tuned: ['beta']"),
        ({"initial": {"momentum": 1.0}}, "Invalid initial momentum: 1.0"),
        ({"initial": {"lr": 2.0}}, "Invalid initial lr: 2.0"),
        ({"initial": {"beta": 0.5}}, "Invalid initial hyperparameter: 'beta'"),
        ({"tuned": 5}, "Invalid tuned: 5 (allowed: a list of"),
        ({"tuned": "lr"}, "Invalid tuned: 'lr' (allowed: a list of"),
        ({"initial": 0.1}, "Invalid initial: 0.1 (allowed: an object with any of lr"),
        ({"initial": {"lr": True}}, "Invalid initial lr: True"),
        ({"task_options": {"batch": 5}}, "batch"),
        ({"initialisations": 0}, "Invalid initialisations: 0 (allowed: an integer >= 1)"),
        ({"initialisations": 2.5}, "Invalid initialisations: 2.5"),
        ({"validation": "half"}, "Invalid validation: 'half' (allowed: minibatch | full)"),
    ],
)
def test_bad_settings_are_clear_errors(options, message):
    with pytest.raises(ValueError) as info:
        OnePassConfig(**{"task": "digits-mlp", **options})
    assert message in str(info.value)


def test_a_task_without_a_validation_set_is_refused():
    with pytest.raises(ValueError, match="Invalid task for onepass: 'rosenbrock'"):
        run_episode(OnePassConfig("rosenbrock", steps=10))


def test_the_inner_update_is_the_registered_sgd():
    # The document names "sgd" as the optimizer of its values: `lodotune evaluate TASK sgd
    # --hyperparameters` must re-run exactly the update the episode took.
    values = {"lr": 0.05, "weight_decay": 0.01, "momentum": 0.7}
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss_at(w):
        return ((w[0] - target) ** 4).sum() + (w[1] ** 2).sum()

    start = [torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)]
    hp = raw(**values)
    weights, buffers = [w.clone() for w in start], [torch.zeros_like(w) for w in start]
    params = [torch.nn.Parameter(w.clone()) for w in start]
    registered = lodo.get("sgd").build(params, values)
    for _ in range(5):
        w = [t.requires_grad_() for t in weights]
        grads = torch.autograd.grad(loss_at(w), w)
        with torch.no_grad():
            u, buffers = sgd_update(w, grads, buffers, hp)
            weights = [wi - ui for wi, ui in zip(w, u, strict=True)]
        registered.zero_grad()
        loss_at(params).backward()
        registered.step()
    for p, w in zip(params, weights, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)


# --- the evaluation: the paper's protocol over random initialisations (clarke.md §5.3, §5.4, §5.7) ---

EVAL = {"steps": 20, "initialisations": 3, "seed": 5}


def eval_config(**fields) -> OnePassConfig:
    return OnePassConfig("digits-mlp", **{**EVAL, **fields})


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """One small evaluation (K = 3 initialisations × 2 methods × 20 steps), shared by the tests."""
    out = tmp_path_factory.mktemp("onepass-evaluation")
    events: list = []
    document = evaluate_onepass(eval_config(), out_dir=out, emit=events.append)
    return out, document, events


def torch_sgd(values: dict[str, float], seed: int, steps: int):
    """An independent Random run: torch.optim.SGD on the task, returns (losses, trained task)."""
    task = task_registry.build("digits-mlp", seed=seed)
    sgd = torch.optim.SGD(
        task.model.parameters(),
        lr=values["lr"],
        momentum=values["momentum"],
        weight_decay=values["weight_decay"],
    )
    losses = []
    for _ in range(steps):
        sgd.zero_grad()
        loss = task.train_loss()
        loss.backward()
        sgd.step()
        losses.append(float(loss.detach()))
    return losses, task


def test_the_evaluation_spans_k_initialisations_and_runs_random_from_the_same_ones(evaluation):
    out, document, events = evaluation
    config = eval_config()
    runs = document["per_run"]
    assert [(r["method"], r["initialisation"]) for r in runs] == [
        (m, i) for i in range(3) for m in ("onepass", "random")
    ]
    seeds = [ga.evaluation_seed(5, r) for r in range(3)]
    assert document["seeds"] == seeds and len(set(seeds)) == 3
    by = {(r["method"], r["initialisation"]): r for r in runs}
    starts = [by["onepass", i]["initial"] for i in range(3)]
    assert starts == document["initial"] == [config.starting_values(i) for i in range(3)]
    for name in ("lr", "weight_decay", "momentum"):
        assert len({s[name] for s in starts}) == 3  # K distinct starting points, every value drawn
    assert all(1e-6 <= s["lr"] <= 1e-1 and 1e-7 <= s["weight_decay"] <= 1e-2 for s in starts)
    for i in range(3):
        tuned, fixed = by["onepass", i], by["random", i]
        assert fixed["initial"] == tuned["initial"] and fixed["seed"] == tuned["seed"] == seeds[i]
        assert fixed["final"] == pytest.approx(fixed["initial"], rel=1e-6)  # held (float32 storage)
        assert tuned["final"] != pytest.approx(tuned["initial"], rel=1e-3)  # one-pass moved them
        assert tuned["steps"] == fixed["steps"] == 20 and not tuned["diverged"] and not fixed["diverged"]
    assert document["diverged"] == 0 and document["reused_episodes"] == 0
    assert (document["steps"], document["validation"], document["initialisations"]) == (20, "minibatch", 3)
    summary = document["summary"]
    assert set(summary) == {"onepass", "random"}
    for method, entry in summary.items():
        assert (entry["runs"], entry["diverged"]) == (3, 0)
        mine = [r for r in runs if r["method"] == method]
        assert {"test_loss", "test_accuracy", "validation_loss", "validation_accuracy"} == set(
            entry["metrics"]
        )
        for metric, stat in entry["metrics"].items():
            values = [r["metrics"][metric] for r in mine]
            assert stat["mean"]["mean"] == pytest.approx(np.mean(values))
            assert stat["mean"] == bootstrap_mean(values, resamples=1000, seed=5)
            assert stat["median"] == bootstrap_median(values, resamples=1000, seed=5)
            best = max(values) if metric.endswith("accuracy") else min(values)
            assert stat["best"]["value"] == best
            assert mine[stat["best"]["initialisation"]]["metrics"][metric] == best
            assert stat["best"]["seed"] == seeds[stat["best"]["initialisation"]]
    assert [type(e) for e in events] == [ev.PhaseStarted] + [ev.EvaluationRunFinished] * 6
    assert events[0].total == 6
    finished = [(e.index, e.of, e.optimizer, e.seed, e.status, e.reused) for e in events[1:]]
    assert finished == [(k, 6, r["method"], r["seed"], "ok", False) for k, r in enumerate(runs)]
    assert read_json(out / "results.json") == document
    assert [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines()] == runs


def test_values_given_stay_fixed_across_initialisations_and_the_others_are_drawn_per_index():
    config = OnePassConfig("digits-mlp", initial={"momentum": 0.9}, seed=2)
    starts = [config.starting_values(r) for r in range(5)]
    assert all(s["momentum"] == 0.9 for s in starts)
    assert len({s["lr"] for s in starts}) == 5 and len({s["weight_decay"] for s in starts}) == 5
    assert starts == [
        OnePassConfig("digits-mlp", initial={"momentum": 0.9}, seed=2).starting_values(r) for r in range(5)
    ]
    # initialisation 0 starts where the tuning episode starts (SeedSequence pads with zeros)
    assert config.starting_values() == starts[0] and config.starting_values() not in starts[1:]


def test_the_random_baseline_is_plain_torch_sgd_with_the_starting_values():
    values = {"lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9}
    episode = run_episode(OnePassConfig("digits-mlp", steps=30, initial=values), seed=11, updates=False)
    assert not episode.diverged and episode.steps == 30
    assert episode.final == pytest.approx(values, rel=1e-6)
    assert [r["step"] for r in episode.trajectory] == [10, 20, 30]
    losses, task = torch_sgd(values, seed=11, steps=30)
    assert losses[-1] < 0.7 * losses[0]  # it trained: not two flat curves compared
    assert episode.losses == pytest.approx(losses, rel=1e-5)
    assert episode.metrics == pytest.approx(task.metrics(), rel=1e-5)


def test_the_evaluations_random_runs_are_torch_sgd_from_their_initialisation(evaluation):
    _, document, _ = evaluation
    fixed = [r for r in document["per_run"] if r["method"] == "random"]
    for record in fixed[:2]:
        _, task = torch_sgd(record["initial"], seed=record["seed"], steps=20)
        assert record["metrics"] == pytest.approx(task.metrics(), rel=1e-5)


def test_a_minibatch_of_validation_is_a_batch_of_the_training_batch_size():
    task = task_registry.build("digits-mlp", seed=0)
    assert task.batch_size == 50 and len(task.validation_set[0]) == 180
    draws, again = torch_generator(3, "v"), torch_generator(3, "v")
    indices = task.validation_minibatch(draws)
    assert len(indices) == 50 and len(set(indices.tolist())) == 50
    assert int(indices.min()) >= 0 and int(indices.max()) < 180
    inputs, targets = task.validation_set
    expected = torch.nn.functional.cross_entropy(task.model(inputs[indices]), targets[indices])
    torch.testing.assert_close(task.validation_minibatch_loss(again), expected)
    assert not torch.equal(task.validation_minibatch(draws), indices)  # each update draws anew
    # a full-batch task (UCI: batch 588 ≥ its 104 validation examples): the whole set, exactly
    whole = task_registry.build("digits-mlp", seed=0, batch_size=1000)
    assert whole.validation_minibatch(torch_generator(3, "v")) is None
    assert torch.equal(whole.validation_minibatch_loss(torch_generator(3, "v")), whole.validation_loss())


def test_the_episode_objective_is_the_minibatch_or_the_whole_validation_set(monkeypatch):
    from tasks.supervised import SupervisedTask

    built, sizes = [], []
    real_build, real_draw = task_registry.build, SupervisedTask.validation_minibatch

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def draw(self, generator):
        indices = real_draw(self, generator)
        sizes.append(len(indices))
        return indices

    monkeypatch.setattr(task_registry, "build", build)
    monkeypatch.setattr(SupervisedTask, "validation_minibatch", draw)
    values, seed = {"lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9}, 7

    def first_objective(validation: str) -> float:
        config = OnePassConfig("digits-mlp", steps=10, initial=values, validation=validation)
        return run_episode(config, seed=seed).trajectory[0]["validation_loss"]

    minibatch = first_objective("minibatch")
    assert sizes == [50]  # one update, one minibatch of the training batch size
    full = first_objective("full")
    assert sizes == [50]  # "full" draws none
    # the weights at the first update are those of 10 plain steps: the Random run leaves them
    run_episode(OnePassConfig("digits-mlp", steps=10, initial=values), seed=seed, updates=False)
    trained = built[-1]
    with torch.no_grad():
        whole = float(trained.validation_loss())
        drawn = float(trained.validation_minibatch_loss(torch_generator(seed, onepass._VALIDATION_STREAM)))
    assert full == pytest.approx(whole, rel=1e-5)  # today's objective: the whole validation set
    assert minibatch == pytest.approx(drawn, rel=1e-5) and minibatch != pytest.approx(whole, rel=1e-3)


def test_a_resumed_evaluation_runs_only_the_missing_episodes_and_gives_the_same_document(
    evaluation, tmp_path, monkeypatch
):
    out, document, _ = evaluation
    lines = (out / EPISODES_FILE).read_text().splitlines()
    # two episodes finished, the third torn by a kill mid-write
    (tmp_path / EPISODES_FILE).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    ran = []
    real = onepass.run_episode

    def counting(config, **kwargs):
        ran.append(kwargs["updates"])
        return real(config, **kwargs)

    monkeypatch.setattr(onepass, "run_episode", counting)
    events: list = []
    resumed = evaluate_onepass(eval_config(), out_dir=tmp_path, emit=events.append)
    assert ran == [True, False, True, False]  # one-pass 1, random 1, …: only the four missing ran
    assert [e.reused for e in events[1:]] == [True, True, False, False, False, False]
    assert resumed["reused_episodes"] == 2

    def timeless(doc):  # wall times are the one thing a second run may not repeat
        doc = json.loads(json.dumps(doc))
        doc.pop("reused_episodes")
        for record in doc["per_run"]:
            record.pop("wall_time")
        for entry in doc["summary"].values():
            entry.pop("wall_time")
        return doc

    assert timeless(resumed) == timeless(document)
    assert resumed["per_run"][:2] == document["per_run"][:2]  # read back as they were
    assert len(onepass.read_episodes(tmp_path / EPISODES_FILE)) == 6
    # all there: nothing runs; a smaller K reuses its part; other settings are other episodes
    assert evaluate_onepass(eval_config(), out_dir=tmp_path)["reused_episodes"] == 6
    assert evaluate_onepass(eval_config(initialisations=2), out_dir=tmp_path)["reused_episodes"] == 4
    assert evaluate_onepass(eval_config(steps_source="paper"), out_dir=tmp_path)["reused_episodes"] == 6
    assert len(ran) == 4
    other = evaluate_onepass(eval_config(initialisations=1, lookback=3), out_dir=tmp_path)
    assert other["reused_episodes"] == 0 and ran == [True, False, True, False, True, False]


def test_bootstrap_mean_and_the_method_summary_leave_diverged_runs_out():
    finite = np.array([1.0, 2.0, 4.0, 8.0])
    got = bootstrap_mean([1.0, 2.0, float("nan"), 4.0, None, 8.0], resamples=500, seed=3)
    means = np.random.default_rng(3).choice(finite, size=(500, 4)).mean(axis=1)
    assert got == {
        "mean": 3.75,
        "bootstrap_mean": pytest.approx(means.mean()),
        "bootstrap_std": pytest.approx(means.std()),
        "runs": 4,
    }
    assert bootstrap_mean([None, float("inf")], resamples=10)["mean"] is None
    values = {"lr": 0.1, "weight_decay": 1e-4, "momentum": 0.5}

    def record(i, diverged, loss=None, accuracy=None):
        metrics = {} if diverged else {"test_loss": loss, "test_accuracy": accuracy}
        return {"initialisation": i, "seed": 10 + i, "diverged": diverged, "metrics": metrics}

    records = [
        record(0, False, 0.5, 0.8),
        record(1, False, 0.3, 0.7),
        record(2, True),
        record(3, False, 0.9, 0.95),
    ]
    records = [{**r, "final": values, "wall_time": 1.0} for r in records]
    summary = summarize_method(records, resamples=200, seed=1)
    assert (summary["runs"], summary["diverged"], summary["wall_time"]) == (4, 1, 4.0)
    loss, accuracy = summary["metrics"]["test_loss"], summary["metrics"]["test_accuracy"]
    assert loss["mean"] == bootstrap_mean([0.5, 0.3, 0.9], resamples=200, seed=1)
    assert loss["median"] == bootstrap_median([0.5, 0.3, 0.9], resamples=200, seed=1)
    assert loss["median"]["runs"] == 3
    assert loss["best"] == {"value": 0.3, "initialisation": 1, "seed": 11} and loss["better"] == "lower"
    assert accuracy["best"] == {"value": 0.95, "initialisation": 3, "seed": 13}
    assert summary["final_hyperparameters"]["lr"]["median"]["median"] == 0.1


def test_the_paper_lengths_are_the_default_steps():
    assert resolve_steps("uci-energy", None) == (4000, PAPER_STEPS_SOURCE)
    assert resolve_steps("uci-protein", None) == (4000, PAPER_STEPS_SOURCE)
    assert resolve_steps("fashion-mnist-mlp", None) == (10000, PAPER_STEPS_SOURCE)
    assert resolve_steps("uci-energy", None, 0.1) == (400, f"{PAPER_STEPS_SOURCE} × step_scale 0.1")
    assert resolve_steps("digits-mlp", None) == (final.final_length("digits-mlp", 1.0), "task's final length")
    assert resolve_steps("digits-mlp", None, 0.5)[0] == final.final_length("digits-mlp", 0.5)
    assert resolve_steps("uci-energy", 123, 0.1) == (123, "given")
    config = STRATEGY.config(TuneJob(task="uci-energy", strategy="onepass"))  # builds no task
    assert (config.steps, config.steps_source) == (4000, PAPER_STEPS_SOURCE)
    assert (config.initialisations, config.validation) == (100, "minibatch")
    assert STRATEGY.config(TuneJob(task="uci-energy", strategy="onepass", step_scale=0.1)).steps == 400
    options = {"steps": 50, "initialisations": 7, "validation": "full"}
    given = STRATEGY.config(TuneJob(task="uci-energy", strategy="onepass", strategy_options=options))
    assert (given.steps, given.steps_source, given.initialisations, given.validation) == (
        50,
        "given",
        7,
        "full",
    )


@pytest.mark.parametrize("value", [0, -3])
def test_fewer_than_one_initialisation_is_refused_naming_the_field(value):
    with pytest.raises(pydantic.ValidationError, match="initialisations"):
        OnePassOptions(initialisations=value)
    with pytest.raises(ValueError, match="initialisations"):
        TuneJob(task="digits-mlp", strategy="onepass", strategy_options={"initialisations": value})
    with pytest.raises(ValueError, match=f"Invalid initialisations: {value}"):
        OnePassConfig("digits-mlp", initialisations=value)


def test_the_results_table_shows_both_methods_and_describe_the_new_settings(evaluation):
    _, document, _ = evaluation
    (table,) = STRATEGY.results_summary(document)
    assert table.columns == (
        "method",
        "quantity",
        "bootstrap mean of means",
        "bootstrap mean of medians",
        "best run",
    )
    assert [row[:2] for row in table.rows] == [
        (m, q) for m in ("onepass", "random") for q in sorted(document["summary"][m]["metrics"])
    ]
    first = document["summary"]["onepass"]["metrics"][table.rows[0][1]]
    assert table.rows[0][2].startswith(f"{first['mean']['bootstrap_mean']:.6g} ± ")
    assert table.rows[0][4] == f"{first['best']['value']:.6g} (init {first['best']['initialisation']})"
    assert "3 random initialisations × 20 steps" in table.title
    assert "onepass 0/3, random 0/3" in table.lines[0]
    described = STRATEGY.describe()
    assert (
        described["settings"]["initialisations"] == 100 and described["settings"]["validation"] == "minibatch"
    )
    assert described["default_steps"]["uci-energy"] == 4000
    assert described["default_steps"]["fashion-mnist-mlp"] == 10000
