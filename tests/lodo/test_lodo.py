"""LODO and its ablations against independent computations (dense matrices, autograd, finite
differences, the Keras Adam formula written out here)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lodo.lodo import LODO, LODOSGD, LODODiagonal, LODOGlobal, LODONoMomentum, LODOResiduals, lodo_update
from lodo.preconditioners import BlockPermutation, hidden_width

F64 = torch.float64
LAYOUTS = ["block-major", "row-major"]


def dense_block_network(perms: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """P = Πᵀ AᵀA Π built from dense matrices (differentiable in ``weights``).

    weights: (N, ñ/b, b, b) reference layout; block k of layer i maps z_k to W[i,k]ᵀ z_k.
    """
    depth, width = perms.shape
    eye = torch.eye(width, dtype=weights.dtype)
    a = eye
    for i in range(depth):
        gather = eye[perms[i]]  # (gather @ z)[j] = z[p[j]]
        blocks = torch.block_diag(*[w.T for w in weights[i]])
        a = blocks @ gather @ a
    return (a.T @ a)[:n, :n]


def make_lodo(n, *, layout="block-major", lr=0.5, dtype=F64, seed=0, **kwargs):
    x = torch.nn.Parameter(torch.zeros(n, dtype=dtype))
    opt = LODO([x], lr=lr, seed=seed, preconditioner=BlockPermutation(layout=layout), **kwargs)
    return x, opt


def perturb_(opt, scale=0.2, seed=1):
    theta = opt.meta_state["theta"]
    theta.add_(scale * torch.randn(theta.shape, generator=torch.Generator().manual_seed(seed), dtype=F64))


def reference_weights(opt):
    return opt.preconditioner.reference_weights(opt.meta_state["theta"], opt.meta_state)


def test_hidden_width_rule():
    assert hidden_width(100, 4) == 204
    assert hidden_width(2, 4) == 8
    assert hidden_width(94_696, 4) == 189_396
    assert hidden_width(3, 4) == 8  # 2n = 6 → 6 + 4 − 2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_initial_preconditioner_is_minus_alpha_identity(layout):
    n, alpha = 13, 0.37
    _, opt = make_lodo(n, layout=layout, lr=alpha)
    g = opt.precondition(torch.eye(n, dtype=F64))
    assert torch.allclose(g, -alpha * torch.eye(n, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_preconditioner_symmetric_nsd_and_equal_to_dense(layout):
    n, alpha = 11, 0.8
    _, opt = make_lodo(n, layout=layout, lr=alpha)
    perturb_(opt)
    g = opt.precondition(torch.eye(n, dtype=F64))
    dense = -alpha * dense_block_network(opt.meta_state["perms"], reference_weights(opt), n)
    assert torch.allclose(g, dense, atol=1e-12, rtol=0)
    assert torch.allclose(g, g.T, atol=1e-13, rtol=0)
    assert torch.linalg.eigvalsh(g).max() <= 1e-12


def test_layouts_agree_with_each_other():
    n = 9
    ref_opts = [make_lodo(n, layout=layout, seed=4)[1] for layout in LAYOUTS]
    w = reference_weights(ref_opts[0]).clone()
    w += 0.3 * torch.randn(w.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    for opt in ref_opts:
        reference_weights(opt).copy_(w)
    outs = [opt.precondition(torch.eye(n, dtype=F64)) for opt in ref_opts]
    assert torch.allclose(outs[0], outs[1], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hypergradient_matches_central_finite_differences(layout):
    """h = ∂ℓ(x + G(θ)m)/∂θ for ℓ(y) = ½(y − c)ᵀH(y − c), every coordinate of θ."""
    n, alpha = 3, 0.6
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(n, n, generator=gen, dtype=F64)
    h_mat = q @ q.T + torch.eye(n, dtype=F64)
    x0 = torch.randn(n, generator=gen, dtype=F64)
    centre = torch.randn(n, generator=gen, dtype=F64)
    m = torch.randn(n, generator=gen, dtype=F64)
    _, opt = make_lodo(n, layout=layout, lr=alpha)
    perturb_(opt, 0.05)
    pre, state = opt.preconditioner, opt.meta_state
    theta = state["theta"]

    def loss(th):
        y = x0 - alpha * pre.apply(th, state, m[None])[0]
        d = y - centre
        return 0.5 * d @ h_mat @ d

    cache = {}
    y = x0 - alpha * pre.direction(theta, state, m, cache)
    g = h_mat @ (y - centre)
    hyper = -alpha * pre.hypergradient(theta, state, m, g, cache)
    eps = 1e-6
    flat = theta.reshape(-1)
    fd = torch.empty_like(flat)
    for k in range(flat.numel()):
        old = flat[k].item()
        flat[k] = old + eps
        up = loss(theta)
        flat[k] = old - eps
        down = loss(theta)
        flat[k] = old
        fd[k] = (up - down) / (2 * eps)
    scale = fd.abs().max()
    assert scale > 1e-3
    assert (hyper.reshape(-1) - fd).abs().max() <= 1e-7 * scale


def keras_adam_(theta, grad, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-7):
    m.mul_(b1).add_((1 - b1) * grad)
    v.mul_(b2).add_((1 - b2) * grad * grad)
    theta.sub_(lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + eps))


def dense_reference_run(perms, weights0, n, losses, *, alpha, meta_lr, beta, meta="adam"):
    """§1.4 with dense matrices and autograd: returns the losses seen and the final x."""
    theta = weights0.clone()
    slots = (torch.zeros_like(theta), torch.zeros_like(theta))
    x = torch.zeros(n, dtype=F64)
    m = torch.zeros(n, dtype=F64)
    seen = []
    for t, loss_fn in enumerate(losses, start=1):
        watched = theta.clone().requires_grad_(True)
        y = x - alpha * dense_block_network(perms, watched, n) @ m  # x is a constant: one-step unroll
        loss = loss_fn(y)
        g, h = torch.autograd.grad(loss, [y, watched])
        seen.append(loss.item())
        with torch.no_grad():
            if meta == "adam":
                keras_adam_(theta, h, *slots, t, meta_lr)
            else:
                theta -= meta_lr * h
        m = beta * m + (1 - beta) * g
        x = y.detach()
    return seen, x


def moving_quadratic(n, steps, seed=3):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    h_mat = q @ torch.diag(torch.linspace(0.1, 2.0, n, dtype=F64)) @ q.T
    centres = torch.cumsum(torch.randn(steps, n, generator=gen, dtype=F64) * 0.3, dim=0)
    return [lambda y, c=c: 0.5 * (y - c) @ h_mat @ (y - c) for c in centres]


@pytest.mark.parametrize(
    ("layout", "meta"), [("block-major", "adam"), ("row-major", "adam"), ("block-major", "sgd")]
)
def test_twenty_steps_equal_dense_reference(layout, meta):
    n, steps, alpha, meta_lr, beta = 10, 20, 0.7, 0.01, 0.8
    losses = moving_quadratic(n, steps)
    x, opt = make_lodo(n, layout=layout, lr=alpha, meta_lr=meta_lr, beta=beta, meta_optimizer=meta)
    perms, w0 = opt.meta_state["perms"].clone(), reference_weights(opt).clone()
    ours = []
    for loss_fn in losses:
        opt.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        ours.append(loss.item())
        opt.step()
    theirs, _ = dense_reference_run(perms, w0, n, losses, alpha=alpha, meta_lr=meta_lr, beta=beta, meta=meta)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-14)
    assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-12)
    # θ moved (the comparison is not vacuous) and matches the reference's θ after the run.
    assert not torch.allclose(reference_weights(opt), w0)


def test_hessian_approximation_error_falls_on_noisy_bowl():
    """§4.1 bowl with n = 20 and the paper's bowl hyperparameters: ‖I + GH‖_F/√n falls."""
    n = 20
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    lam = torch.exp(torch.linspace(math.log(1e-3), 0.0, n, dtype=F64))
    h_mat = q @ torch.diag(lam) @ q.T
    x, opt = make_lodo(n, lr=0.27, meta_lr=0.00096, beta=0.195, seed=1)
    centre = torch.zeros(n, dtype=F64)
    eye = torch.eye(n, dtype=F64)

    def error():
        return (torch.linalg.matrix_norm(eye + opt.precondition(eye) @ h_mat) / math.sqrt(n)).item()

    start, late = error(), []
    for t in range(5000):
        centre += torch.randn(n, generator=gen, dtype=F64)
        opt.zero_grad()
        d = x - centre
        (0.5 * d @ h_mat @ d).backward()
        opt.step()
        if t >= 4000 and t % 100 == 0:
            late.append(error())
    assert sum(late) / len(late) < 0.85 * start


def test_diagonal_and_global_structure():
    n = 6
    gen = torch.Generator().manual_seed(0)
    for cls, expect_shape in [(LODODiagonal, (n,)), (LODOGlobal, (1,))]:
        x = torch.nn.Parameter(torch.zeros(n, dtype=F64))
        opt = cls([x], lr=0.5)
        theta = opt.meta_state["theta"]
        assert theta.shape == expect_shape
        theta.copy_(torch.rand(expect_shape, generator=gen, dtype=F64) + 0.5)
        g = opt.precondition(torch.eye(n, dtype=F64))
        assert torch.allclose(g, -0.5 * torch.diag(theta.expand(n)), atol=1e-15)


def test_global_hypergradient_is_scalar_gm():
    x = torch.nn.Parameter(torch.zeros(4, dtype=F64))
    opt = LODOGlobal([x], lr=0.5, meta_lr=0.1, beta=0.0, meta_optimizer="sgd")
    g1 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    x.grad = g1.clone()
    opt.step()  # m = g1, x = −0.5·g1
    g2 = torch.tensor([0.3, 0.1, -1.0, 2.0], dtype=F64)
    x.grad = g2.clone()
    opt.step()
    # h = ∂(g2ᵀ(−α w g1))/∂w = −α g2·g1; SGD: w = 1 − η h
    expected_w = 1.0 - 0.1 * (-0.5 * torch.dot(g2, g1).item())
    assert opt.meta_state["theta"].item() == pytest.approx(expected_w, rel=1e-14)


def test_residual_structure_and_hypergradient():
    n = 5
    x = torch.nn.Parameter(torch.zeros(n, dtype=F64))
    opt = LODOResiduals([x], lr=0.4, seed=2, residual_depth=6)
    state, pre = opt.meta_state, opt.preconditioner
    assert state["theta"].shape == (7, 2 * n)
    assert torch.all(state["theta"][-1] == 1)
    g = opt.precondition(torch.eye(n, dtype=F64))
    # Dense reference: R = ∏(I + diag(wᵢ)Pᵢ) in application order; G = −α Πᵀ Rᵀ diag(d) R Π.
    width, eye = 2 * n, torch.eye(2 * n, dtype=F64)
    r = eye
    for i in range(6):
        r = (eye + torch.diag(state["theta"][i]) @ eye[state["perms"][i]]) @ r
    dense = -0.4 * (r.T @ torch.diag(state["theta"][-1]) @ r)[:n, :n]
    assert width == 10
    assert torch.allclose(g, dense, atol=1e-13)
    assert torch.allclose(g, g.T, atol=1e-13)
    # Near −αI at init: the random residual weights have std 1/√depth.
    assert not torch.allclose(g, -0.4 * torch.eye(n, dtype=F64), atol=1e-3)
    m, grad = torch.randn(n, dtype=F64), torch.randn(n, dtype=F64)
    hyper = pre.hypergradient(state["theta"], state, m, grad, {})
    theta = state["theta"].clone().requires_grad_(True)
    out = pre.apply(theta, state, m[None])[0]
    (expected,) = torch.autograd.grad(out @ grad, theta)
    assert torch.allclose(hyper, expected, atol=1e-13)


def test_no_momentum_and_sgd_variants_configure_lodo():
    x = torch.nn.Parameter(torch.zeros(3, dtype=F64))
    assert LODONoMomentum([x]).param_groups[0]["beta"] == 0.0
    assert LODOSGD([x]).param_groups[0]["meta_optimizer"] == "sgd"
    assert "exp_avg" not in LODOSGD([x]).meta_state


@pytest.mark.parametrize("cls", [LODO, LODODiagonal, LODOGlobal, LODOResiduals, LODONoMomentum, LODOSGD])
def test_each_variant_step_equals_functional_core(cls):
    n = 7
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(n, generator=gen, dtype=F64) for _ in range(4)]
    x = torch.nn.Parameter(torch.zeros(n, dtype=F64))
    opt = cls([x], lr=0.3, meta_lr=0.01, seed=3)
    state, cache = copy.deepcopy(opt.meta_state), {}
    group = opt.param_groups[0]
    expected = torch.zeros(n, dtype=F64)
    for g in grads:
        x.grad = g.clone()
        opt.step()
        expected += lodo_update(
            g.clone(),
            state,
            cache,
            preconditioner=opt.preconditioner,
            **{k: group[k] for k in ("lr", "meta_lr", "beta", "meta_optimizer", "meta_betas", "meta_eps")},
            eps_convention=group["eps_convention"],
        )
    assert torch.equal(x.detach(), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_dict_round_trip_is_bit_identical(layout):
    """fp32 parameters, fp64 meta-state: the reload keeps dtypes and the next steps exactly."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    data = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    target = data.sum(1, keepdim=True)

    def run(opt, mdl, steps, start):
        out = []
        for t in range(start, start + steps):
            batch = slice((t % 8) * 8, (t % 8) * 8 + 8)
            opt.zero_grad()
            loss = ((mdl(data[batch]) - target[batch]) ** 2).mean()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    opt = LODO(
        model.parameters(), lr=0.1, meta_lr=1e-3, seed=1, preconditioner=BlockPermutation(layout=layout)
    )
    run(opt, model, 6, 0)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    expected = run(opt, model, 5, 6)

    fresh_model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    fresh_model.load_state_dict(saved_model)
    fresh = LODO(fresh_model.parameters(), seed=99, preconditioner=BlockPermutation(layout=layout))
    fresh.load_state_dict(saved_opt)
    state = fresh.meta_state
    assert state["theta"].dtype == F64 and state["momentum"].dtype == F64
    assert torch.equal(state["perms"], saved_opt["state"]["lodo"]["perms"])
    assert state["theta"] is not saved_opt["state"]["lodo"]["theta"]
    assert run(fresh, fresh_model, 5, 6) == expected
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_float32_meta_state_is_selectable():
    x = torch.nn.Parameter(torch.zeros(5))
    opt = LODO([x], meta_dtype=torch.float32, seed=0)
    assert opt.meta_state["theta"].dtype == torch.float32
    x.grad = torch.ones(5)
    opt.step()
    opt.step()
    assert x.dtype == torch.float32 and torch.isfinite(x).all()


def test_seed_makes_permutations_and_init_reproducible():
    a = make_lodo(6, seed=11)[1].meta_state
    b = make_lodo(6, seed=11)[1].meta_state
    c = make_lodo(6, seed=12)[1].meta_state
    assert torch.equal(a["perms"], b["perms"]) and torch.equal(a["theta"], b["theta"])
    assert not torch.equal(a["perms"], c["perms"])
    gen = torch.Generator().manual_seed(11)
    x = torch.nn.Parameter(torch.zeros(6, dtype=F64))
    d = LODO([x], seed=gen, preconditioner=BlockPermutation(layout="block-major")).meta_state
    assert torch.equal(a["theta"], d["theta"])


def test_first_step_is_zero_and_counts_a_meta_step():
    x, opt = make_lodo(4, lr=0.5, beta=0.9)
    theta0 = opt.meta_state["theta"].clone()
    x.grad = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    opt.step()
    state = opt.meta_state
    assert state["step"] == 1
    assert torch.equal(state["theta"], theta0)
    assert torch.allclose(state["momentum"], 0.1 * x.grad)
    # x moved by G(θ₀)m₁ = −α(1 − β)g: the zero step was iteration 0 of the reference.
    assert torch.allclose(x.detach(), -0.5 * 0.1 * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64))


def test_torch_eps_convention_changes_the_meta_update():
    steps = {}
    for conv in ("keras", "torch"):
        x, opt = make_lodo(4, eps_convention=conv, meta_lr=0.1)
        for g in ([1.0, 0, 0, 0], [0, 1e-6, 0, 0], [0, 0, 1e-6, 0]):
            x.grad = torch.tensor(g, dtype=F64)
            opt.step()
        steps[conv] = opt.meta_state["theta"].clone()
    assert not torch.equal(steps["keras"], steps["torch"])


def test_non_finite_gradient_raises_and_leaves_state_untouched():
    x, opt = make_lodo(4)
    x.grad = torch.ones(4, dtype=F64)
    opt.step()
    before = copy.deepcopy(opt.meta_state)
    x_before = x.detach().clone()
    x.grad = torch.tensor([1.0, float("nan"), 0.0, 0.0], dtype=F64)
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step()
    for k, v in before.items():
        assert torch.equal(v, opt.meta_state[k]) if torch.is_tensor(v) else v == opt.meta_state[k]
    assert torch.equal(x.detach(), x_before)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"meta_lr": float("inf")}, "meta_lr"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 2.5}, "block_size"),
        ({"depth": 0}, "depth"),
        ({"meta_optimizer": "rmsprop"}, "meta_optimizer"),
        ({"eps_convention": "jax"}, "eps_convention"),
        ({"meta_dtype": torch.float16}, "meta_dtype"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    x = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=rf"Invalid {name}\b.*allowed"):
        LODO([x], **kwargs)


def test_empty_parameter_list_is_refused():
    with pytest.raises(ValueError, match=r"Invalid params"):
        LODO([])


def test_groups_must_share_hyperparameters():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="Invalid param_groups"):
        LODO([{"params": [a]}, {"params": [b], "lr": 0.1}])
    opt = LODO([{"params": [a]}, {"params": [b]}], seed=0)
    assert opt.meta_state["momentum"].numel() == 4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hypergradient_equals_autograd_through_apply(layout):
    """The tape-free hypergradient against autograd on the same network (n = 30)."""
    n = 30
    _, opt = make_lodo(n, layout=layout)
    perturb_(opt, 0.05)
    state, pre = opt.meta_state, opt.preconditioner
    gen = torch.Generator().manual_seed(9)
    m, g = torch.randn(n, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    cache = {}
    pre.direction(state["theta"], state, m, cache)
    ours = pre.hypergradient(state["theta"], state, m, g, cache).clone()
    theta = state["theta"].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(pre.apply(theta, state, m[None])[0] @ g, theta)
    assert torch.allclose(ours, expected, atol=1e-12, rtol=1e-10)
