"""The LODO family as population optimizers: P members (same task, own values and seeds) per step.

What matches the per-trial optimizers (``lodo.lodo``) member by member, and how:

* **Initialisation.** Member i draws θ and its permutations from ``torch.Generator().manual_seed(
  seeds[i])`` with the very preconditioner class (and defaults) the per-trial class uses, so its
  θ₀ and buffers are the per-trial ones bit for bit; the members are then stacked.
* **Update order.** :meth:`PopulationLODO.step` is ``lodo_update`` with a member axis: the
  hypergradient of the last step, h ← −αh, the meta step (Keras-ε Adam with bias corrections at
  step + 1, or SGD), m ← βm + (1 − β)g, s = −α·P(θ)m, x ← x + s cast to x's dtype.
* **Arithmetic.** The block network of all members is run as one network of width P·ñ whose
  permutations stay inside each member's positions (gathers: one ``index_select`` per layer with
  the member offsets folded into precomputed indices; block products: one ``bmm`` over
  (P·K, b, b), or the row-major layout's b multiply-adds over rows), with the per-trial
  operations in the per-trial order, the per-trial layout rule applied to the total width, and
  the same explicit hypergradient ⟨AΠg, AΠm⟩ that reuses the m-path of the last direction. The
  residual network batches its gathers the same way and differentiates with autograd, as the
  per-trial class does. Adam is torch's fused kernel: per member at the member's rate when a
  member is large (the per-trial arithmetic exactly), else one call for all members at rate 1
  into a scratch tensor, then θ += meta_lr·scratch (per-member rates without P launches; the
  rate enters one rounding later). So a member agrees with its per-trial run to rounding
  (~1e-13 relative after 30 float64 steps; bit for bit in some cases, e.g. LODO-SGD and large
  members in the row-major layout).

Members never mix: every op is row-wise in the member. A member whose gradient is not finite is
refused (its bit set, its parameter row left as it was); the per-trial optimizer raises there.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.optim.adam import adam

from lodo._validation import check_choice, check_decay, check_nonnegative
from lodo.lodo import LODO, LODOResiduals
from lodo.meta_optimizers import adam_meta_update_
from lodo.preconditioners import (
    LAYOUTS,
    ROW_MAJOR_FROM_WIDTH,
    BlockPermutation,
    Diagonal,
    Residual,
    Scalar,
    hidden_width,
)

from .base import PopulationOptimizer, Preconditioner

__all__ = ["LODO_FAMILY", "PopulationLODO"]


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


# The per-trial constructor's defaults, read rather than copied, so both forms build the same thing.
_LODO = _defaults(LODO.__init__)
_RESIDUAL_DEPTH = _defaults(LODOResiduals.__init__)["residual_depth"]


# Block-network layouts of the population (see _BlockPermutationBatch); "auto" picks block-major
# below the per-trial row-major width (on the total width P·ñ), then the interleaved row-major
# layout while the total width is below INTERLEAVE_UNTIL, then one member per group.
_BLOCK_LAYOUTS = ("block-major", "row-major-interleaved", "row-major")
INTERLEAVE_UNTIL = 65_536
# θ numbers per member from which Adam runs per member (P fused calls) rather than all at once.
PER_MEMBER_ADAM_FROM = 65_536


def block_layout(total_width: int) -> str:
    """The "auto" layout of a population's block network of total width P·ñ."""
    if total_width < ROW_MAJOR_FROM_WIDTH:
        return "block-major"
    return "row-major-interleaved" if total_width < INTERLEAVE_UNTIL else "row-major"


def _seeded(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


class _Batched:
    """A batched P(θ): per-member init by the per-trial class, then ops over all members at once.

    θ lives in ``state["theta"]`` in a member-first layout (so ``keep`` works on it); that is a
    view of the contiguous storage the ops use (:meth:`storage`, :meth:`view`; for the block
    network the layer axis comes first), and :meth:`per_member` broadcasts over that storage.
    """

    reference: BlockPermutation | Diagonal | Residual | Scalar

    def init(self, n, seeds, *, dtype, device):
        thetas, buffers = [], []
        for seed in seeds:
            theta, buf = self.reference.init(n, dtype=dtype, device=device, generator=_seeded(seed))
            thetas.append(self._to_state(theta, buf))
            buffers.append(buf)
        return torch.stack(thetas), {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]}

    def _to_state(self, theta, buffers):
        return theta

    def storage(self, view):
        return view.contiguous()

    def view(self, storage):
        return storage

    def per_member(self, x, like):
        """A ``[P]`` tensor shaped to broadcast over the storage ``like`` member by member."""
        return x.view(-1, *([1] * (like.dim() - 1)))

    def member_slices(self, storage):
        """Each member's part of a storage tensor as a list of contiguous pieces, or None when
        members are interleaved (then no per-member kernel call can address them)."""
        return [[row] for row in storage.unbind(0)]

    def bind(self, theta, buffers, n):
        """Derived data (indices, views, scratch) for this θ storage; drops the cached m-path."""
        self.theta = theta

    def member(self, state, i):
        """Member i's θ and buffers in the per-trial layout (for ``precondition``)."""
        return state["theta"][i], {k: state[k][i] for k in self.buffer_keys}

    buffer_keys: tuple[str, ...] = ()


class _ScalarBatch(_Batched):
    """LODO-Global: θ [P, 1]."""

    reference = Scalar()

    def direction(self, m):
        return self.theta * m

    def hypergradient(self, m, g):
        return torch.bmm(g.unsqueeze(1), m.unsqueeze(2)).view(-1, 1)


class _DiagonalBatch(_Batched):
    """LODO-Diagonal: θ [P, n]."""

    reference = Diagonal()

    def direction(self, m):
        return self.theta * m

    def hypergradient(self, m, g):
        return g * m


class _ResidualBatch(_Batched):
    """LODO-Residuals: θ [P, depth + 1, 2n]. The hypergradient is autograd through the graph the
    last direction recorded (the per-trial class re-runs that forward pass under autograd; the
    graph is the same, so one pass is saved)."""

    buffer_keys = ("perms", "inverse")

    def __init__(self, depth: int = _RESIDUAL_DEPTH):
        self.reference = Residual(depth)
        self.depth = depth

    def bind(self, theta, buffers, n):
        self.theta = theta
        members, _, width = buffers["perms"].shape
        offsets = (torch.arange(members, device=theta.device) * width).view(-1, 1, 1)
        self.fwd = (buffers["perms"] + offsets).transpose(0, 1).reshape(self.depth, -1).unbind()
        self.bwd = (buffers["inverse"] + offsets).transpose(0, 1).reshape(self.depth, -1).unbind()
        self.graph = None

    def _apply(self, theta, vectors):
        members, n = vectors.shape
        # One unbind, not a slice per use: each slice's backward would fill a θ-sized zero tensor.
        w = theta.unbind(1)
        z = vectors.new_zeros(members, 2 * n)
        z[:, :n] = vectors
        for i in range(self.depth):
            z = z + w[i] * z.reshape(-1).index_select(0, self.fwd[i]).view(members, -1)
        z = w[self.depth] * z
        for i in range(self.depth - 1, -1, -1):
            z = z + (w[i] * z).reshape(-1).index_select(0, self.bwd[i]).view(members, -1)
        return z[:, :n]

    def direction(self, m):
        with torch.enable_grad():
            watched = self.theta.detach().requires_grad_(True)
            out = self._apply(watched, m)
        self.graph = (watched, out)
        return out.detach()

    def hypergradient(self, m, g):
        if self.graph is None:  # after keep(): record the last direction again
            self.direction(m)
        watched, out = self.graph
        self.graph = None
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(out, watched, grad_outputs=g)
        return grad


class _BlockPermutationBatch(_Batched):
    """LODO's Πᵀ AᵀA Π for P members as ONE block network of width P·ñ: the members' blocks side
    by side, permutations that never leave a member's positions. Each layer is then one gather
    (one ``index_select``, member offsets folded into precomputed indices) and one block product
    for all members, with the per-trial code's arithmetic in the per-trial layouts:

    * ``block-major`` (total width < 2,048, the per-trial rule): vectors (P·ñ, c) in natural
      order per member, layer i's blocks one (P·K, b, b) view, ``_BlockMajor``'s own ops;
    * ``row-major``: b multiply-adds over rows, as ``_RowMajor``, on vectors (c, G, b, m·K)
      with m members per group: interleaved (G = 1, rows of length P·K, fewer and longer
      rows: best while the vectors fit in cache) or one member per group (G = P, m = 1: every
      member's positions contiguous, so gathers stay local: best for large widths).

    ``state["theta"]`` is [P, N, K, b, b] (each member's reference layout), a view of the
    storage the ops read: (N, P, K, b, b) block-major, (N, G, b, b, m·K) row-major.
    The layout is fixed at construction from the total width (all compute the same G).
    """

    buffer_keys = ("perms",)

    def __init__(
        self, block_size: int = _LODO["block_size"], depth: int = _LODO["depth"], layout: str = "auto"
    ):
        self.reference = BlockPermutation(block_size, depth)
        self.b, self.depth = block_size, depth
        self.layout = check_choice("layout", layout, ("auto", *_BLOCK_LAYOUTS))

    def init(self, n, seeds, *, dtype, device):
        total = len(seeds) * hidden_width(n, self.b)
        if self.layout == "auto":
            self.layout = block_layout(total)
        self.blocks = hidden_width(n, self.b) // self.b  # K, blocks per member
        self.row_major = self.layout != "block-major"
        self.interleaved = self.layout == "row-major-interleaved"
        return super().init(n, seeds, dtype=dtype, device=device)

    def _to_state(self, theta, buffers):
        return self.reference.reference_weights(theta, buffers)

    def storage(self, view):
        members, depth, blocks, b, _ = view.shape
        if not self.row_major:
            return view.transpose(0, 1).contiguous()
        if self.interleaved:
            return view.permute(1, 3, 4, 0, 2).reshape(depth, 1, b, b, members * blocks)
        return view.permute(1, 0, 3, 4, 2).contiguous()

    def view(self, storage):
        if not self.row_major:
            return storage.transpose(0, 1)
        if self.interleaved:
            depth, _, b, _, joint = storage.shape
            return storage.view(depth, b, b, joint // self.blocks, self.blocks).permute(3, 0, 4, 1, 2)
        return storage.permute(1, 0, 4, 2, 3)

    def per_member(self, x, like):
        if self.interleaved:  # the member is the outer part of the last dimension
            return x.repeat_interleave(self.blocks).view(1, 1, 1, 1, -1)
        return x.view(1, -1, 1, 1, 1)

    def member_slices(self, storage):
        if self.layout != "row-major":
            return None
        return [list(storage[:, p].unbind()) for p in range(storage.shape[1])]

    def member(self, state, i):
        perms = state["perms"][i]
        return self.reference._ops(perms.shape[1]).from_reference(state["theta"][i]), {"perms": perms}

    def _indices(self, perms, n):
        """The gather indices of the joint network, from each member's per-trial ones.

        ``place[p, q]`` is where member p's per-trial vector position q sits in the joint vector;
        member p's gather src → dst becomes place[p, src] → place[p, dst]. Layer 0 reads the
        padded input, where member p's coordinate j < n is at p·n + j and the padding follows
        all P·n coordinates (so the pad is one contiguous copy of the [P, n] batch).
        """
        members, depth, width = perms.shape
        b, blocks = self.b, width // self.b
        device = perms.device
        member = torch.arange(members, device=device).view(-1, 1)
        pos = torch.arange(width, device=device)
        inverse = torch.argsort(perms, dim=2)
        if self.row_major:  # as _RowMajor.plan, per member
            to_layout = (pos % b) * blocks + pos // b  # natural -> layout position
            from_layout = (pos % blocks) * b + pos // blocks  # layout position -> natural
            fwd = to_layout[perms[:, :, from_layout]]
            fwd[:, 0] = perms[:, 0, from_layout]
            bwd = to_layout[inverse[:, :, from_layout]]
            out = to_layout[inverse[:, 0, :n]]
        else:  # as _BlockMajor.plan, per member
            fwd, bwd, out = perms.clone(), inverse, inverse[:, 0, :n]
        if self.interleaved:  # position a·K + k of member p → a·(P·K) + p·K + k
            place = (pos // blocks) * (members * blocks) + member * blocks + pos % blocks
        else:
            place = member * width + pos
        natural = torch.where(pos < n, member * n + pos, members * n + member * (width - n) + pos - n)

        def joint(source, first_natural):
            index = torch.empty(depth, members * width, dtype=source.dtype, device=device)
            for i in range(depth):
                table = natural if (i == 0 and first_natural) else place
                index[i, place.reshape(-1)] = torch.gather(table, 1, source[:, i]).reshape(-1)
            return index.unbind()

        # int32 indices gather ~20% faster than int64 (less index traffic)
        dtype = torch.int32 if members * width < 2**31 else torch.int64
        fwd, bwd = [i.to(dtype) for i in joint(fwd, True)], [i.to(dtype) for i in joint(bwd, False)]
        return fwd, bwd, torch.gather(place, 1, out).reshape(-1).to(dtype)

    def bind(self, theta, buffers, n):
        self.theta, self.n = theta, n
        perms = buffers["perms"]
        members, depth, width = perms.shape
        b = self.b
        self.members = members
        fwd, bwd, out = self._indices(perms, n)
        layers = theta.unbind()
        self.grad = torch.empty_like(theta)
        if self.row_major:
            self.grads = self.grad.unbind()
            self._bind_row_major(theta, fwd, bwd, out, n)
        else:
            ops = LAYOUTS["block-major"]
            weights = [w.view(-1, b, b) for w in layers]
            self.plan = {
                "weights": weights,
                "weights_t": [w.transpose(1, 2) for w in weights],
                "fwd": fwd,
                "bwd": bwd,
                "out": out,
            }
            self.grads = [g.view(-1, b, b) for g in self.grad.unbind()]
            self.pairs, self.m_stores, self.g_stores = ops.pair_stores(depth, members * width, theta)
            self.work = {key: {} for key in ("m", "g", "step", "hyper")}
        self.has_m_path = False

    def _bind_row_major(self, theta, fwd, bwd, out, n):
        """Every view the row-major passes use, built once: a step only launches the ops.

        ``tops`` holds the last layer's output of the g-path (row 0) and of the m-path (row 1),
        so the hypergradient's downward pass reads both without a copy; row 1 stays the m-path
        of the last direction until the next one.
        """
        b, depth = self.b, self.depth
        groups, blocks = theta.shape[1], theta.shape[-1]
        joint = groups * b * blocks
        layers = theta.unbind()
        rows = [[w[:, a] for a in range(b)] for w in layers]  # (G, b, m·K): what coordinate a feeds
        cols = [[w[:, :, o] for o in range(b)] for w in layers]  # (G, b, m·K): what feeds o
        self.tops = theta.new_empty(2, joint)
        self.pad = theta.new_zeros(joint)  # only the first P·n entries are ever written
        self.pairs = theta.new_empty(depth, 2, joint)  # layer inputs: row 0 m-path, row 1 g-path
        self.forward_plans = {}
        for path, row in (("m", 0), ("g", 1)):
            top = self.tops[1 - row]
            out3 = top.view(groups, b, blocks)
            plan = []
            for i in range(depth):
                store = self.pairs[i, row]
                u = store.view(groups, b, 1, blocks)
                plan.append(
                    (self.pad if i == 0 else top, fwd[i], store, [u[:, a] for a in range(b)], rows[i], out3)
                )
            self.forward_plans[path] = plan
        self.backward_plans = {}
        for width_c, source in ((1, self.tops[1:2]), (2, self.tops)):
            x = theta.new_empty(width_c, groups, b, blocks)
            y = theta.new_empty(width_c, joint)
            result = theta.new_empty(width_c, out.numel())
            plan = []
            for i in range(depth - 1, -1, -1):
                y5 = (source if i == depth - 1 else y).view(width_c, groups, b, 1, blocks)
                hyper = None
                if width_c == 2:
                    inputs = self.pairs[i].view(2, groups, b, 1, blocks)
                    hyper = (
                        self.grads[i],
                        inputs[0],
                        y5[0].view(groups, 1, b, blocks),
                        inputs[1],
                        y5[1].view(groups, 1, b, blocks),
                    )
                target = result if i == 0 else y
                gathers = [(x.view(width_c, -1)[c], target[c]) for c in range(width_c)]
                plan.append(
                    (hyper, cols[i], [y5[:, :, o] for o in range(b)], x, bwd[i] if i > 0 else out, gathers)
                )
            self.backward_plans[width_c] = (plan, result)

    def _rm_forward(self, vectors, path):
        """``_RowMajor.forward`` on the joint vector of one [P, n] batch (layer inputs kept)."""
        self.pad[: vectors.numel()] = vectors.reshape(-1)
        for src, index, store, u, rows, out in self.forward_plans[path]:
            torch.index_select(src, 0, index, out=store)
            torch.mul(u[0], rows[0], out=out)
            for a in range(1, self.b):
                out.addcmul_(u[a], rows[a])

    def _rm_backward(self, width_c):
        """``_RowMajor.backward`` from ``tops`` (the m-path alone, or both paths with each layer's
        ∂/∂W into ``grad``), with one 1-D gather per column (~3x faster than one along dim 1)."""
        plan, result = self.backward_plans[width_c]
        for hyper, w_cols, y, x, index, gathers in plan:
            if hyper is not None:
                grad, in0, y0, in1, y1 = hyper
                torch.mul(in0, y0, out=grad)
                grad.addcmul_(in1, y1)
            torch.mul(w_cols[0], y[0], out=x)
            for o in range(1, self.b):
                x.addcmul_(w_cols[o], y[o])
            for src, target in gathers:
                torch.index_select(src, 0, index, out=target)
        return result

    def direction(self, m):
        if self.row_major:
            self._rm_forward(m, "m")
            out = self._rm_backward(1)
        else:
            ops = LAYOUTS["block-major"]
            self.m_top = ops.forward(self.plan, m.reshape(1, -1), self.m_stores, self.work["m"])
            out = ops.backward(self.plan, self.m_top, work=self.work["step"])
        self.has_m_path = True
        return out.view(self.members, self.n)

    def hypergradient(self, m, g):
        if not self.has_m_path:  # after keep(): recompute the m-path of the last direction
            self.direction(m)
        # Column (row) 0: the m-path with cotangent A·Πg; 1: the g-path with cotangent A·Πm.
        if self.row_major:
            self._rm_forward(g, "g")
            self._rm_backward(2)
        else:
            ops = LAYOUTS["block-major"]
            g_top = ops.forward(self.plan, g.reshape(1, -1), self.g_stores, self.work["g"])
            tops = ops.join(g_top, self.m_top)
            ops.backward(self.plan, tops, self.pairs.unbind(), self.grads, self.work["hyper"])
        return self.grad


class PopulationLODO(PopulationOptimizer):
    """P LODO members stepped together: ``lodo_update`` with a member axis (see the module doc).

    ``state``: theta (the preconditioner's θ, member first), momentum [P, n], exp_avg and
    exp_avg_sq (Adam meta) and the preconditioner's buffers; ``hyper``: lr, meta_lr, beta [P].
    """

    def __init__(
        self,
        params: torch.Tensor,
        values: Sequence[Mapping[str, float]],
        *,
        seeds: Sequence[int],
        preconditioner: _Batched,
        meta_optimizer: str = "adam",
        beta: float | None = None,
        meta_dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        if (
            params.dim() != 2
            or params.shape[0] != len(values)
            or len(values) != len(seeds)
            or not len(values)
        ):
            raise ValueError(
                f"Invalid population: params {tuple(params.shape)}, {len(values)} value sets, "
                f"{len(seeds)} seeds (allowed: params [P, n] with P value sets and P seeds, P >= 1)"
            )
        if meta_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Invalid meta_dtype: {meta_dtype} (allowed: torch.float32 | torch.float64)")
        rows = []
        for v in values:
            b = beta if beta is not None else v["beta"]
            rows.append(
                (
                    check_nonnegative("lr", v["lr"]),
                    check_nonnegative("meta_lr", v["meta_lr"]),
                    check_decay("beta", b),
                )
            )
        members, n = params.shape
        self.n, self.dtype, self.meta_optimizer = n, meta_dtype, meta_optimizer
        self.meta_betas, self.meta_eps = tuple(_LODO["meta_betas"]), _LODO["meta_eps"]
        self.eps_convention = _LODO["eps_convention"]
        self.pre = preconditioner
        device = params.device
        theta, buffers = preconditioner.init(n, list(seeds), dtype=meta_dtype, device=device)
        self.state = {
            "theta": theta,
            "momentum": torch.zeros(members, n, dtype=meta_dtype, device=device),
            **buffers,
        }
        if meta_optimizer == "adam":
            storage = preconditioner.storage(theta)
            self.state["exp_avg"] = preconditioner.view(torch.zeros_like(storage))
            self.state["exp_avg_sq"] = preconditioner.view(torch.zeros_like(storage))
        # Exact values (float64) for the derived coefficients, so that e.g. 1 − β is rounded to the
        # meta dtype from the double, as the per-trial optimizer's Python floats are.
        self._values = torch.tensor(rows, dtype=torch.float64, device=device)
        for j, key in enumerate(("lr", "meta_lr", "beta")):
            self.hyper[key] = self._values[:, j].to(meta_dtype)
        self._bind()

    def _after_keep(self, index: torch.Tensor) -> None:
        self._values = self._values.index_select(0, index.to(self._values.device))
        self._bind()

    def _bind(self) -> None:
        """Storage layouts, the network's derived data and the per-member coefficients."""
        pre, state = self.pre, self.state
        self._storage = {}
        for key in ("theta", "exp_avg", "exp_avg_sq"):
            if key in state:
                self._storage[key] = pre.storage(state[key])
                state[key] = pre.view(self._storage[key])
        theta = self._storage["theta"]
        pre.bind(theta, {k: state[k] for k in pre.buffer_keys}, self.n)

        def cast(x):
            return x.to(self.dtype)

        lr, meta_lr, beta = self._values.unbind(1)
        self._neg_lr_theta = pre.per_member(cast(-lr), theta)
        self._meta_lr_theta = pre.per_member(
            cast(meta_lr if self.meta_optimizer == "adam" else -meta_lr), theta
        )
        self._neg_lr_col = cast(-lr).view(-1, 1)
        self._beta_col = cast(beta).view(-1, 1)
        self._one_minus_beta_col = cast(1.0 - beta).view(-1, 1)
        self._meta_lrs = meta_lr.tolist()
        # Large members: torch's fused Adam per member on its contiguous pieces at its own rate
        # (the per-trial arithmetic exactly, no scratch tensor, P launches); small or interleaved
        # members: one fused call at rate 1 into a scratch tensor for all, then θ += meta_lr·that.
        self._update = None
        self._per_member_adam = (
            self.meta_optimizer == "adam"
            and theta.numel() // len(self._meta_lrs) >= PER_MEMBER_ADAM_FROM
            and pre.member_slices(theta) is not None
        )
        if self.meta_optimizer == "adam" and not self._per_member_adam:
            self._update = torch.empty_like(theta)

    @torch.no_grad()
    def step(self, params: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """One LODO iteration of every member, in place on ``params``; returns the refused members."""
        g = grads.to(self.dtype)  # may alias ``grads``: never written
        refused = ~torch.isfinite(g).all(dim=1)
        momentum, theta = self.state["momentum"], self._storage["theta"]
        if self.steps > 0:
            h = self.pre.hypergradient(momentum, g)
            h.mul_(self._neg_lr_theta)
            if self._per_member_adam:
                self._adam_per_member(h)
            elif self.meta_optimizer == "adam":
                # Fused Adam at rate 1 into a zeroed scratch tensor, then each member's rate.
                update = self._update.zero_()
                adam_meta_update_(
                    update,
                    h,
                    self._storage["exp_avg"],
                    self._storage["exp_avg_sq"],
                    step=self.steps + 1,
                    lr=1.0,
                    beta1=self.meta_betas[0],
                    beta2=self.meta_betas[1],
                    eps=self.meta_eps,
                    eps_convention=self.eps_convention,
                )
                theta.addcmul_(update, self._meta_lr_theta)
            else:
                theta.addcmul_(h, self._meta_lr_theta)  # θ − meta_lr·h
        self.steps += 1
        momentum.mul_(self._beta_col).addcmul_(g, self._one_minus_beta_col)
        s = torch.mul(self.pre.direction(momentum), self._neg_lr_col)
        s.masked_fill_(refused.unsqueeze(1), 0.0)
        params.add_(s.to(params.dtype))
        return refused

    def _adam_per_member(self, h: torch.Tensor) -> None:
        """``adam_meta_update_`` member by member, each call over the member's pieces."""
        step = self.steps + 1
        beta2 = self.meta_betas[1]
        eps = (
            self.meta_eps / math.sqrt(1.0 - beta2**step) if self.eps_convention == "keras" else self.meta_eps
        )
        pieces = [self.pre.member_slices(t) for t in (self._storage["theta"], h)]
        pieces += [self.pre.member_slices(self._storage[k]) for k in ("exp_avg", "exp_avg_sq")]
        theta = self._storage["theta"]
        for p, lr in enumerate(self._meta_lrs):
            params, grads, exp_avgs, exp_avg_sqs = (x[p] for x in pieces)
            counters = torch.full((len(params),), float(step - 1), device=theta.device).unbind()
            adam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                list(counters),  # the kernel adds 1
                fused=theta.device.type in ("cpu", "cuda"),
                amsgrad=False,
                beta1=self.meta_betas[0],
                beta2=beta2,
                lr=lr,
                weight_decay=0.0,
                eps=eps,
                maximize=False,
            )

    def precondition(self, member: int) -> Preconditioner:
        """Member ``member``'s G v = −α·P(θ)v on its current θ, by the per-trial preconditioner."""
        theta, buffers = self.pre.member(self.state, member)
        neg_lr = -float(self._values[member, 0])
        reference = self.pre.reference

        def apply(vectors: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return reference.apply(theta, buffers, vectors.to(theta.dtype)).mul_(neg_lr)

        return apply

    def describe(self):
        return {
            **super().describe(),
            "preconditioner": self.pre.reference.name,
            "meta_optimizer": self.meta_optimizer,
            "meta_dtype": str(self.dtype).removeprefix("torch."),
            "steps": self.steps,
        }


def _builder(make: Callable[[], _Batched], *, meta_optimizer: str = "adam", beta: float | None = None):
    def build(
        params: torch.Tensor,
        values: list[dict[str, float]],
        *,
        seeds: list[int],
        meta_dtype: torch.dtype = torch.float64,
    ) -> PopulationOptimizer:
        return PopulationLODO(
            params,
            values,
            seeds=seeds,
            preconditioner=make(),
            meta_optimizer=meta_optimizer,
            beta=beta,
            meta_dtype=meta_dtype,
        )

    return build


# Registry name → builder(params [P, n], values, *, seeds, meta_dtype), as ``lodo.registry`` builds them.
LODO_FAMILY: dict[str, Callable[..., PopulationOptimizer]] = {
    "lodo": _builder(_BlockPermutationBatch),
    "lodo-diagonal": _builder(_DiagonalBatch),
    "lodo-global": _builder(_ScalarBatch),
    "lodo-residuals": _builder(_ResidualBatch),
    "lodo-no-momentum": _builder(_BlockPermutationBatch, beta=0.0),
    "lodo-sgd": _builder(_BlockPermutationBatch, meta_optimizer="sgd"),
}
