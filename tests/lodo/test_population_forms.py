"""Population optimizers (lodo.population): every registered form against its per-trial optimizer.

Each member is fed the same closed-loop gradients as its own per-trial optimizer (a fixed random
quadratic at the member's current point), in float64: the parameters agree to 1e-10 relative at
every step. A refused (LODO) or non-finite member leaves the others identical; ``keep`` drops
members without disturbing the rest; ``precondition`` is the per-trial G.
"""

from __future__ import annotations

import pytest
import torch

import lodo
import lodo.population as populations

N = 10
STEPS = 30


def _values(name: str, members: int) -> list[dict[str, float]]:
    out = []
    for i in range(members):
        values = lodo.get(name).defaults
        values["lr"] *= 0.1 * (1 + 0.5 * i) if name.startswith("lodo") else 1 + 0.5 * i
        for key in ("momentum", "beta"):
            if key in values:
                values[key] = [0.0, 0.5, 0.9, 0.3][i % 4]
        if "rho" in values:
            values["rho"] = 0.8 + 0.05 * i
        out.append(values)
    return out


def _quadratic(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    hessian = a @ a.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    centre = torch.randn(n, generator=generator, dtype=torch.float64)
    return lambda x: (x - centre) @ hessian  # the gradient at each row of x


def _pair(name, members=4, n=N):
    values = _values(name, members)
    seeds = [3 + i for i in range(members)]
    start = torch.randn(members, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    solo_params = [start[i].clone().requires_grad_(True) for i in range(members)]
    solos = []
    for i, p in enumerate(solo_params):
        options = {"seed": seeds[i]} if lodo.get(name).seeded else {}
        solos.append(lodo.get(name).build([p], values[i], **options))
    population = populations.build(name, start.clone(), values, seeds=seeds)
    return start.clone(), population, solo_params, solos


def _solo_step(optimizer, param, grad) -> bool:
    param.grad = grad.clone()
    try:
        optimizer.step()
    except FloatingPointError:
        return True
    return False


# The LODO family's own suite (closed-loop equality, both layouts, refusal, keep, precondition)
# is tests/lodo/test_population_lodo.py; here every form once more, by the registry's list.
@pytest.mark.parametrize("name", populations.SUPPORTED)
def test_every_member_steps_as_its_per_trial_optimizer(name):
    gradient = _quadratic(N)
    params, population, solo_params, solos = _pair(name)
    for step in range(STEPS):
        grads = gradient(params)
        refused = population.step(params, grads)
        assert not refused.any()
        for i, (p, optimizer) in enumerate(zip(solo_params, solos, strict=True)):
            _solo_step(optimizer, p, gradient(p.detach()[None])[0])
            torch.testing.assert_close(
                params[i], p.detach(), rtol=1e-10, atol=1e-13, msg=f"member {i}, step {step}"
            )


@pytest.mark.parametrize(
    "name", ["lodo", "lodo-residuals", "lodo-diagonal", "lodo-global", "adam", "rmsprop"]
)
def test_a_non_finite_member_leaves_the_others_alone_and_keep_drops_it(name):
    gradient = _quadratic(N)
    params, population, solo_params, solos = _pair(name)
    for step in range(12):
        grads = gradient(params)
        if step == 5:
            grads[1, 3] = float("nan")
        refused = population.step(params, grads)
        if step == 5:
            assert refused.tolist() == (
                [False, True, False, False] if name.startswith("lodo") else [False] * 4
            )
            kept = torch.tensor([0, 2, 3])
            population.keep(kept)
            params = params.index_select(0, kept)
            solo_params = [solo_params[i] for i in (0, 2, 3)]
            solos = [solos[i] for i in (0, 2, 3)]
        for p, optimizer in zip(solo_params, solos, strict=True):
            _solo_step(optimizer, p, gradient(p.detach()[None])[0])
        torch.testing.assert_close(
            params, torch.stack([p.detach() for p in solo_params]), rtol=1e-10, atol=1e-13
        )
    assert population.size == 3


def test_a_refused_lodo_member_keeps_its_parameters():
    params, population, _, _ = _pair("lodo")
    before = params.clone()
    grads = _quadratic(N)(params)
    grads[2] = float("inf")
    refused = population.step(params, grads)
    assert refused.tolist() == [False, False, True, False]
    assert torch.equal(params[2], before[2])


@pytest.mark.parametrize("name", ["lodo", "lodo-residuals", "lodo-diagonal", "lodo-global"])
def test_precondition_is_the_per_trial_g(name):
    gradient = _quadratic(N)
    params, population, solo_params, solos = _pair(name)
    for _ in range(6):
        population.step(params, gradient(params))
        for p, optimizer in zip(solo_params, solos, strict=True):
            _solo_step(optimizer, p, gradient(p.detach()[None])[0])
    vectors = torch.randn(5, N, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for i, optimizer in enumerate(solos):
        torch.testing.assert_close(
            population.precondition(i)(vectors), optimizer.precondition(vectors), rtol=1e-10, atol=1e-13
        )


def test_the_block_network_matches_in_the_row_major_layout_too():
    """n = 1100: hidden width 2204 >= 2048, where the per-trial LODO switches to row-major."""
    n = 1100
    gradient = _quadratic(n)
    params, population, solo_params, solos = _pair("lodo", members=2, n=n)
    for _ in range(4):
        population.step(params, gradient(params))
        for p, optimizer in zip(solo_params, solos, strict=True):
            _solo_step(optimizer, p, gradient(p.detach()[None])[0])
    torch.testing.assert_close(params, torch.stack([p.detach() for p in solo_params]), rtol=1e-10, atol=1e-13)


def test_float32_meta_state_and_bad_input():
    params = torch.zeros(2, N, dtype=torch.float32)
    population = populations.build(
        "lodo", params, [{}, {"lr": 0.5}], seeds=[0, 1], options={"meta_dtype": "float32"}
    )
    population.step(params, torch.ones(2, N))
    assert params.dtype == torch.float32 and torch.isfinite(params).all()
    with pytest.raises(
        ValueError, match=r"Invalid optimizer for a population: .lbfgs.*lodo \| lodo-diagonal"
    ):
        populations.build("lbfgs", params, [{}], seeds=[0])
    with pytest.raises(ValueError, match="Invalid hyperparameter 'gamma' for adam"):
        populations.build("adam", params, [{"gamma": 1.0}, {}], seeds=[0, 1])
    with pytest.raises(ValueError, match="Invalid meta_dtype"):
        populations.build("lodo", params, [{}, {}], seeds=[0, 1], options={"meta_dtype": "float16"})
