"""The population form of the LODO family against the per-trial optimizers, member by member.

Each member of a population is compared with the registry's per-trial optimizer built with the
member's values and seed, both fed the same closed-loop gradients (of a fixed random quadratic
at each one's own current point), step after step.
"""

from __future__ import annotations

import pytest
import torch

import lodo
from lodo.population import build
from lodo.population.lodo_family import LODO_FAMILY, PopulationLODO, _BlockPermutationBatch, block_layout
from lodo.preconditioners import hidden_width

F64 = torch.float64
NAMES = ["lodo", "lodo-diagonal", "lodo-global", "lodo-residuals", "lodo-no-momentum", "lodo-sgd"]


def member_values(name, members):
    """Distinct, stable values per member (the registry's names only)."""
    spec = lodo.get(name)
    values = []
    for i in range(members):
        v = {"lr": 0.05 + 0.05 * i, "meta_lr": 10.0 ** (-3 + 0.5 * i)}
        if "beta" in spec.names:
            v["beta"] = 0.5 + 0.12 * i
        values.append(spec.check_values(v))
    return values


class Quadratic:
    """½xᵀHx + bᵀx with H ≻ 0 (eigenvalues in [0.2, ~2.2]): gradients at any batch of points."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(n, n, generator=g, dtype=F64) / n**0.5
        self.h = a @ a.T + 0.2 * torch.eye(n, dtype=F64)
        self.b = torch.randn(n, generator=g, dtype=F64)

    def grad(self, x):
        return x.to(F64) @ self.h + self.b


class Separable:
    """½Σ dᵢxᵢ² + bᵀx: a quadratic whose gradient costs O(n), for large n."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.d = 0.2 + 2 * torch.rand(n, generator=g, dtype=F64)
        self.b = torch.randn(n, generator=g, dtype=F64)

    def grad(self, x):
        return x.to(F64) * self.d + self.b


class Pair:
    """A population and the per-trial optimizers of its members, on their own copies of x₀."""

    def __init__(
        self, name, n, members=3, *, seeds=None, meta_dtype=F64, dtype=F64, pre=None, seed=0, task=Quadratic
    ):
        self.values = member_values(name, members)
        self.seeds = seeds or [100 + 7 * i for i in range(members)]
        x0 = torch.randn(members, n, generator=torch.Generator().manual_seed(seed + 1), dtype=F64).to(dtype)
        self.xs = [torch.nn.Parameter(x0[i].clone()) for i in range(members)]
        spec = lodo.get(name)
        self.trials = [
            spec.build([x], v, seed=s, meta_dtype=meta_dtype)
            for x, v, s in zip(self.xs, self.values, self.seeds, strict=True)
        ]
        self.params = x0.clone()
        if pre is None:
            self.pop = LODO_FAMILY[name](self.params, self.values, seeds=self.seeds, meta_dtype=meta_dtype)
        else:
            self.pop = PopulationLODO(
                self.params, self.values, seeds=self.seeds, preconditioner=pre, meta_dtype=meta_dtype
            )
        self.task = task(n, seed)
        self.alive = list(range(members))  # row j of the population is trial alive[j]

    def step(self, poison=None):
        """One step of both; ``poison`` (a row) gets a NaN gradient. Returns the refused bits."""
        grads = self.task.grad(self.params).to(self.params.dtype)
        if poison is not None:
            grads[poison, 0] = float("nan")
        for j, t in enumerate(self.alive):
            if j == poison:
                continue
            self.xs[t].grad = self.task.grad(self.xs[t].detach()).to(self.xs[t].dtype)
            self.trials[t].step()
        return self.pop.step(self.params, grads)

    def expected(self):
        return torch.stack([self.xs[t].detach() for t in self.alive])

    def check(self, rtol=1e-10, atol=1e-12):
        torch.testing.assert_close(self.params, self.expected(), rtol=rtol, atol=atol)

    def drop(self, row):
        keep = [j for j in range(len(self.alive)) if j != row]
        index = torch.tensor(keep)
        self.params = self.params.index_select(0, index)
        self.pop.keep(index)
        self.alive = [self.alive[j] for j in keep]


def run(pair, steps):
    for _ in range(steps):
        refused = pair.step()
        assert not refused.any()
        pair.check()


def test_family_is_the_six_registry_lodo_optimizers():
    assert set(LODO_FAMILY) == set(NAMES)
    for name in NAMES:
        assert lodo.get(name).target.startswith("lodo.lodo:")


@pytest.mark.parametrize("name", NAMES)
def test_initial_state_is_the_per_trial_one(name):
    pair = Pair(name, 10, members=3)
    for i, trial in enumerate(pair.trials):
        state = trial.meta_state
        theta = state["theta"]
        if name not in ("lodo-diagonal", "lodo-global", "lodo-residuals"):
            theta = trial.preconditioner.reference_weights(theta, state)
        assert torch.equal(pair.pop.state["theta"][i], theta)
        for key in state["buffer_keys"]:
            assert torch.equal(pair.pop.state[key][i], state[key])
    assert pair.pop.size == 3
    assert all(t.shape[0] == 3 for t in [*pair.pop.state.values(), *pair.pop.hyper.values()])


@pytest.mark.parametrize("name", NAMES)
def test_members_match_their_per_trial_runs(name):
    run(Pair(name, 10, members=4), 20 if name == "lodo-residuals" else 30)


@pytest.mark.parametrize(
    ("n", "members", "layout"),
    [
        (10, 3, "row-major-interleaved"),  # per-trial block-major
        (10, 3, "row-major"),
        (300, 4, "auto"),  # total width 2,416: interleaved row-major vs per-trial block-major
        (1100, 3, "auto"),  # per-trial row-major (ñ = 2,204)
    ],
)
def test_block_layouts_match_per_trial(n, members, layout):
    pair = Pair("lodo", n, members=members, pre=_BlockPermutationBatch(layout=layout))
    run(pair, 30 if n < 100 else 10 if n < 1000 else 3)


@pytest.mark.parametrize(("name", "n"), [("lodo-diagonal", 70_000), ("lodo", 1100)])
def test_large_members_run_adam_member_by_member(name, n):
    pre = _BlockPermutationBatch(layout="row-major") if name == "lodo" else None
    pair = Pair(name, n, members=2, pre=pre, task=Separable)
    assert pair.pop._per_member_adam
    run(pair, 4)


def test_auto_layout_follows_the_total_width():
    assert block_layout(32 * hidden_width(2, 4)) == "block-major"
    assert block_layout(4 * hidden_width(300, 4)) == "row-major-interleaved"  # per trial block-major
    assert block_layout(32 * hidden_width(100, 4)) == "row-major-interleaved"
    assert block_layout(32 * hidden_width(3000, 4)) == "row-major"
    pre = _BlockPermutationBatch()
    pre.init(300, [1, 2, 3, 4], dtype=F64, device=torch.device("cpu"))
    assert pre.layout == "row-major-interleaved"


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_member_is_refused_alone(name):
    pair = Pair(name, 10, members=4)
    run(pair, 5)
    before = pair.params.clone()
    refused = pair.step(poison=1)
    assert refused.tolist() == [False, True, False, False]
    assert torch.equal(pair.params[1], before[1])
    with pytest.raises(FloatingPointError):  # what the per-trial optimizer does there
        pair.xs[1].grad = torch.full_like(pair.xs[1], float("nan"))
        pair.trials[1].step()
    others = [0, 2, 3]
    torch.testing.assert_close(pair.params[others], pair.expected()[others], rtol=1e-10, atol=1e-12)
    pair.drop(1)
    assert pair.pop.size == 3
    run(pair, 8)


def test_keep_reorders_members():
    pair = Pair("lodo", 12, members=4)
    run(pair, 4)
    index = torch.tensor([3, 0, 2])
    pair.params = pair.params.index_select(0, index)
    pair.pop.keep(index)
    pair.alive = [3, 0, 2]
    run(pair, 6)


@pytest.mark.parametrize("name", NAMES)
def test_precondition_is_the_per_trial_one(name):
    pair = Pair(name, 10, members=3)
    run(pair, 6)
    vectors = torch.randn(5, 10, generator=torch.Generator().manual_seed(3), dtype=F64)
    for j, t in enumerate(pair.alive):
        got = pair.pop.precondition(j)(vectors)
        torch.testing.assert_close(got, pair.trials[t].precondition(vectors), rtol=1e-10, atol=1e-13)
    pair.drop(0)  # member indices follow the kept order
    got = pair.pop.precondition(0)(vectors)
    torch.testing.assert_close(got, pair.trials[1].precondition(vectors), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("lodo", F64), ("lodo", torch.float32), ("lodo-residuals", F64), ("lodo-diagonal", torch.float32)],
)
def test_float32_meta_dtype(name, dtype):
    pair = Pair(name, 10, members=3, meta_dtype=torch.float32, dtype=dtype)
    assert pair.pop.state["theta"].dtype == torch.float32
    for _ in range(10):
        assert not pair.step().any()
        pair.check(rtol=1e-4, atol=1e-5)
    assert pair.params.dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_built_through_the_population_registry(name):
    n, members = 6, 3
    params = torch.randn(members, n, dtype=F64)
    values = [{}, {"lr": 0.3}, {"meta_lr": 0.01}]
    pop = build(name, params, values, seeds=[1, 2, 3], options={"meta_dtype": "float32"})
    assert pop.state["theta"].dtype == torch.float32
    assert pop.hyper["lr"].tolist() == pytest.approx([1.0, 0.3, 1.0])
    for _ in range(3):
        assert not pop.step(params, 0.1 * params).any()
    assert torch.isfinite(params).all()
    assert pop.describe()["members"] == members


def test_invalid_populations_are_refused():
    values = member_values("lodo", 2)
    params = torch.zeros(2, 4, dtype=F64)
    with pytest.raises(ValueError, match="lr"):
        LODO_FAMILY["lodo"](params, [values[0], {**values[1], "lr": -1.0}], seeds=[0, 1])
    with pytest.raises(ValueError, match="beta"):
        LODO_FAMILY["lodo-sgd"](params, [values[0], {**values[1], "beta": 1.0}], seeds=[0, 1])
    with pytest.raises(ValueError, match="population"):
        LODO_FAMILY["lodo"](params, values, seeds=[0])
    with pytest.raises(ValueError, match="meta_dtype"):
        LODO_FAMILY["lodo"](params, values, seeds=[0, 1], meta_dtype=torch.float16)
