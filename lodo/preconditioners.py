"""Learned preconditioners P(θ) of the LODO family; LODO steps by G(θ)m with G(θ) = −α·P(θ).

Each preconditioner owns one meta-weight tensor θ (what the meta-optimizer updates) and some
fixed buffers (random permutations). It provides three operations on flat vectors of length n:

* ``direction(θ, buffers, m, cache)`` → P(θ)m, remembering in ``cache`` what the next
  hypergradient needs;
* ``hypergradient(θ, buffers, m, g, cache)`` → ∂(gᵀP(θ)m)/∂θ for the m of the last direction;
* ``apply(θ, buffers, V)`` → P(θ)vᵢ for every row vᵢ of V (metrics, tests).

Variants (reference/lodo.md §1.2, §1.7): ``BlockPermutation`` (LODO), ``Residual``
(LODO-Residuals), ``Diagonal`` (LODO-Diagonal) and ``Scalar`` (LODO-Global).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from ._validation import check_choice, check_positive_int

Buffers = dict[str, torch.Tensor]
Cache = dict[str, torch.Tensor]


class Preconditioner(ABC):
    """P(θ), the learned part of LODO's step direction."""

    name: str

    @abstractmethod
    def init(self, n: int, *, dtype: torch.dtype, device: torch.device, generator: torch.Generator):
        """Returns ``(theta, buffers)`` for an n-dimensional problem (random draws on the CPU)."""

    @abstractmethod
    def direction(self, theta: torch.Tensor, buffers: Buffers, m: torch.Tensor, cache: Cache) -> torch.Tensor:
        """P(θ)m; fills ``cache`` for the next :meth:`hypergradient`."""

    @abstractmethod
    def hypergradient(
        self, theta: torch.Tensor, buffers: Buffers, m: torch.Tensor, g: torch.Tensor, cache: Cache
    ) -> torch.Tensor:
        """∂(gᵀP(θ)m)/∂θ, where ``m`` is the vector of the last :meth:`direction` call."""

    @abstractmethod
    def apply(self, theta: torch.Tensor, buffers: Buffers, vectors: torch.Tensor) -> torch.Tensor:
        """P(θ) applied to each row of a (k, n) tensor."""


class Scalar(Preconditioner):
    """LODO-Global as the paper describes it: P = w·I with one learned scalar w, w₀ = 1.

    The authors' experiment map routed "LODO-Global" to the diagonal class; this is the
    scalar version their paper names.
    """

    name = "scalar"

    def init(self, n, *, dtype, device, generator):
        return torch.ones(1, dtype=dtype, device=device), {}

    def direction(self, theta, buffers, m, cache):
        return theta * m

    def hypergradient(self, theta, buffers, m, g, cache):
        return torch.dot(g, m).reshape(1)

    def apply(self, theta, buffers, vectors):
        return theta * vectors


class Diagonal(Preconditioner):
    """LODO-Diagonal: P = diag(w), w ∈ Rⁿ initialised to ones."""

    name = "diagonal"

    def init(self, n, *, dtype, device, generator):
        return torch.ones(n, dtype=dtype, device=device), {}

    def direction(self, theta, buffers, m, cache):
        return theta * m

    def hypergradient(self, theta, buffers, m, g, cache):
        return g * m

    def apply(self, theta, buffers, vectors):
        return theta * vectors


def hidden_width(n: int, block_size: int) -> int:
    """ñ = 2n + b − (2n mod b): the authors' rounding, which adds a whole block when b | 2n."""
    return 2 * n + block_size - (2 * n) % block_size


def _buffer(work: dict | None, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
    """A scratch tensor kept in ``work`` between calls (fresh large allocations page-fault on
    every call, which cost as much as the arithmetic at n = 1e5). Without ``work`` it is None,
    so the ops allocate their results and stay differentiable (``apply`` under autograd)."""
    if work is None:
        return None
    buf = work.get(key)
    if buf is None or buf.shape != shape:
        buf = work[key] = like.new_empty(shape)
    return buf


def _padded(work: dict | None, vectors: torch.Tensor, width: int, cols_first: bool) -> torch.Tensor:
    """Πv for a (c, n) batch: zero-padded to the hidden width, as (c, ñ) or (ñ, c). The scratch
    copy's padding is zeroed once and stays zero: only the first n entries are ever written."""
    cols, n = vectors.shape
    shape = (cols, width) if cols_first else (width, cols)
    pad = work.get("pad") if work is not None else None
    if pad is None or pad.shape != shape:
        pad = vectors.new_zeros(shape)
        if work is not None:
            work["pad"] = pad
    if cols_first:
        pad[:, :n] = vectors
    else:
        pad[:n] = vectors.T
    return pad


class _BlockMajor:
    """Vector batches as (ñ, c) in natural order, θ as (N, ñ/b, b, b) (the reference layout);
    block products are ``torch.bmm`` calls. Fewest kernel launches: the fast layout for small n,
    where the cost is per call rather than per number (hence the precomputed lists of views)."""

    @staticmethod
    def from_reference(weights):
        return weights.contiguous()

    @staticmethod
    def to_reference(theta):
        return theta

    @staticmethod
    def pair_stores(depth, width, like):
        """Layer inputs of both paths in one (N, ñ, 2) tensor: column 0 the m-path, 1 the g-path."""
        pairs = like.new_empty(depth, width, 2)
        return pairs, [p[:, 0:1] for p in pairs.unbind()], [p[:, 1:2] for p in pairs.unbind()]

    @staticmethod
    def join(first, second):
        return torch.cat([first, second], dim=-1)

    @staticmethod
    def plan(theta, perms, n, block_size):
        inverse = torch.argsort(perms, dim=1)
        return {
            "weights": theta.unbind(),
            "weights_t": theta.transpose(2, 3).unbind(),
            "fwd": perms.unbind(),
            "bwd": inverse.unbind(),
            "out": inverse[0, :n],
        }

    @staticmethod
    def forward(plan, vectors, stores, work=None):
        blocks, b, _ = plan["weights"][0].shape
        cols = vectors.shape[0]
        z = _padded(work, vectors, blocks * b, cols_first=False)
        for i, (w_t, perm) in enumerate(zip(plan["weights_t"], plan["fwd"], strict=True)):
            u = torch.index_select(z, 0, perm, out=stores[i] if stores else _buffer(work, "u", z.shape, z))
            out = _buffer(work, "z", (blocks, b, cols), z)
            z = torch.bmm(w_t, u.view(blocks, b, cols), out=out).view(-1, cols)
        return z

    @staticmethod
    def backward(plan, y, pairs=None, grads=None, work=None):
        weights, bwd = plan["weights"], plan["bwd"]
        blocks, b, _ = weights[0].shape
        cols = y.shape[1]
        for i in range(len(weights) - 1, -1, -1):
            y3 = y.view(blocks, b, cols)
            if pairs is not None:
                torch.bmm(pairs[i].view(blocks, b, cols), y3.transpose(1, 2), out=grads[i])
            x = torch.bmm(weights[i], y3, out=_buffer(work, "x", (blocks, b, cols), y)).view(-1, cols)
            y = torch.index_select(x, 0, bwd[i], out=_buffer(work, "y", x.shape, x)) if i > 0 else x
        return y.index_select(0, plan["out"]).T


class _RowMajor:
    """Vector batches as (c, ñ) where position a·(ñ/b) + k holds coordinate a of block k, θ as
    (N, b, b, ñ/b). A block product is b² multiply-adds over contiguous rows of length ñ/b
    instead of ñ/b tiny matrix products; the change of layout is folded into the gather
    indices, so it costs nothing. Faster than ``_BlockMajor`` for large n (bench/lodo_step.py)."""

    @staticmethod
    def from_reference(weights):
        return weights.permute(0, 2, 3, 1).contiguous()

    @staticmethod
    def to_reference(theta):
        return theta.permute(0, 3, 1, 2)

    @staticmethod
    def pair_stores(depth, width, like):
        """Layer inputs of both paths in one (N, 2, ñ) tensor: row 0 the m-path, 1 the g-path."""
        pairs = like.new_empty(depth, 2, width)
        return pairs, [p[0:1] for p in pairs.unbind()], [p[1:2] for p in pairs.unbind()]

    @staticmethod
    def join(first, second):
        return torch.cat([first, second], dim=0)

    @staticmethod
    def plan(theta, perms, n, block_size):
        width = perms.shape[1]
        blocks = width // block_size
        pos = torch.arange(width, device=perms.device)
        to_layout = (pos % block_size) * blocks + pos // block_size  # natural -> layout position
        from_layout = (pos % blocks) * block_size + pos // blocks  # layout position -> natural
        inverse = torch.argsort(perms, dim=1)
        fwd = to_layout[perms[:, from_layout]]
        fwd[0] = perms[0, from_layout]  # layer 0 reads the zero-padded input in natural order
        bwd = to_layout[inverse[:, from_layout]]
        return {
            "rows": [w.unbind(0) for w in theta.unbind()],  # W[a] = (b, ñ/b): what a feeds
            "cols": [w.unbind(1) for w in theta.unbind()],  # W[:, o] = (b, ñ/b): what feeds o
            "fwd": fwd.unbind(),
            # Layer 0's transposed gather goes straight to the first n natural coordinates.
            "bwd": [to_layout[inverse[0, :n]], *bwd[1:].unbind()],
        }

    @staticmethod
    def _gather(z, index, out):
        """out[c] = z[c][index] row by row: a 1-D index_select is ~3x faster than one along dim 1."""
        if out is None:
            return z.index_select(1, index)
        for row, row_out in zip(z, out, strict=True):
            torch.index_select(row, 0, index, out=row_out)
        return out

    @staticmethod
    def forward(plan, vectors, stores, work=None):
        rows = plan["rows"]
        b, blocks = rows[0][0].shape
        cols = vectors.shape[0]
        z = _padded(work, vectors, b * blocks, cols_first=True)
        for i, (w_rows, perm) in enumerate(zip(rows, plan["fwd"], strict=True)):
            u = _RowMajor._gather(z, perm, stores[i] if stores else _buffer(work, "u", z.shape, z))
            u = u.view(cols, b, blocks)
            out = torch.mul(u[:, 0:1], w_rows[0], out=_buffer(work, "z", (cols, b, blocks), z))
            for a in range(1, b):
                out.addcmul_(u[:, a : a + 1], w_rows[a])
            z = out.view(cols, -1)
        return z

    @staticmethod
    def backward(plan, y, pairs=None, grads=None, work=None):
        w_cols, bwd = plan["cols"], plan["bwd"]
        b, blocks = w_cols[0][0].shape
        cols = y.shape[0]
        for i in range(len(w_cols) - 1, -1, -1):
            y3 = y.view(cols, b, blocks)
            if pairs is not None:
                inputs, g = pairs[i].view(cols, b, blocks), grads[i]
                torch.mul(inputs[0].unsqueeze(1), y3[0].unsqueeze(0), out=g)
                for c in range(1, cols):
                    g.addcmul_(inputs[c].unsqueeze(1), y3[c].unsqueeze(0))
            x = torch.mul(w_cols[i][0], y3[:, 0:1], out=_buffer(work, "x", (cols, b, blocks), y))
            for o in range(1, b):
                x.addcmul_(w_cols[i][o], y3[:, o : o + 1])
            x = x.view(cols, -1)
            y = (
                torch.index_select(x, 1, bwd[i], out=_buffer(work, "y", x.shape, x))
                if i > 0
                else x[:, bwd[0]]
            )
        return y


LAYOUTS = {"block-major": _BlockMajor, "row-major": _RowMajor}
# Hidden width from which "auto" picks the row-major layout (bench/lodo_step.py measures both).
ROW_MAJOR_FROM_WIDTH = 2_048


class BlockPermutation(Preconditioner):
    """LODO's P(θ) = Πᵀ AᵀA Π with A = D_{N−1}P_{N−1} ⋯ D₀P₀ (reference/lodo.md §1.2–1.3).

    Π zero-pads x ∈ Rⁿ to the hidden width ñ; Pᵢ are fixed uniform random permutations applied
    as gathers, (Pᵢz)[j] = z[pᵢ[j]]; Dᵢ is block-diagonal with b×b blocks acting as "row vector
    times Wᵢₖ": y_k[o] = Σ_a z_k[a]·Wᵢ[k, a, o]. Blocks start orthogonal, so P(θ₀) = I and
    G(θ₀) = −αI.

    Hypergradient without an autograd tape: gᵀP(θ)m = ⟨A Πg, A Πm⟩, so
    ∂/∂Wᵢ = (inputs of layer i on the m-path) ⊗ (cotangent from A Πg)
          + (inputs of layer i on the g-path) ⊗ (cotangent from A Πm).
    The m-path inputs are kept from :meth:`direction`; the g-path is one forward pass, and both
    cotangents come from one downward pass over two columns. Activation memory is 2·N·ñ
    numbers (the layer inputs of both paths), as much as an autograd tape of G(θ)m keeps; what
    is saved is the tape itself and a second forward pass of the m-path, which is reused from
    the step. Scratch buffers live in the cache so that no large tensor is allocated per call.

    ``layout`` picks the memory layout of θ and of the vectors: "block-major", "row-major", or
    "auto" (row-major from ñ = 2,048, the crossover bench/lodo_step.py measured). Both compute
    the same G.
    """

    name = "block-permutation"

    def __init__(self, block_size: int = 4, depth: int = 16, layout: str = "auto"):
        self.block_size = check_positive_int("block_size", block_size)
        self.depth = check_positive_int("depth", depth)
        self.layout = check_choice("layout", layout, ("auto", *LAYOUTS))

    def _ops(self, width: int):
        if self.layout != "auto":
            return LAYOUTS[self.layout]
        return _RowMajor if width >= ROW_MAJOR_FROM_WIDTH else _BlockMajor

    def init(self, n, *, dtype, device, generator):
        b, depth = self.block_size, self.depth
        width = hidden_width(n, b)
        blocks = width // b
        perms = torch.stack([torch.randperm(width, generator=generator) for _ in range(depth)])
        gauss = torch.randn(depth * blocks, b, b, generator=generator, dtype=torch.float64)
        orthogonal = torch.linalg.svd(gauss)[2]  # right singular vectors: orthogonal blocks
        weights = self._ops(width).from_reference(orthogonal.reshape(depth, blocks, b, b))
        return weights.to(dtype=dtype, device=device), {"perms": perms.to(device)}

    def _prepare(self, theta, buffers, n, cache):
        """Gather indices, views, activation and scratch buffers, built once per θ tensor."""
        width = buffers["perms"].shape[1]
        ops = self._ops(width)
        if "plan" not in cache:
            cache["plan"] = ops.plan(theta, buffers["perms"], n, self.block_size)
            cache["pairs"], cache["m_stores"], cache["g_stores"] = ops.pair_stores(self.depth, width, theta)
            cache["grad"] = torch.empty_like(theta)
            for key in ("work_m", "work_g", "work_step", "work_hyper"):
                cache[key] = {}
        return ops, cache["plan"]

    def direction(self, theta, buffers, m, cache):
        ops, plan = self._prepare(theta, buffers, m.numel(), cache)
        top = ops.forward(plan, m[None], cache["m_stores"], cache["work_m"])
        cache["m_top"] = top  # lives in work_m until the next direction
        return ops.backward(plan, top, work=cache["work_step"])[0]

    def hypergradient(self, theta, buffers, m, g, cache):
        ops, plan = self._prepare(theta, buffers, m.numel(), cache)
        if "m_top" not in cache:  # e.g. after load_state_dict: recompute the m-path
            self.direction(theta, buffers, m, cache)
        g_top = ops.forward(plan, g[None], cache["g_stores"], cache["work_g"])
        # Column 0: the m-path with cotangent A·Πg; column 1: the g-path with cotangent A·Πm.
        tops = ops.join(g_top, cache["m_top"])
        grad = cache["grad"]
        ops.backward(plan, tops, cache["pairs"].unbind(), grad.unbind(), cache["work_hyper"])
        return grad

    def apply(self, theta, buffers, vectors):
        ops, plan = self._prepare(theta, buffers, vectors.shape[1], {})
        return ops.backward(plan, ops.forward(plan, vectors, None))

    def reference_weights(self, theta: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        """θ in the reference layout (N, ñ/b, b, b): block k of layer i is W[i, k]."""
        return self._ops(buffers["perms"].shape[1]).to_reference(theta)


class Residual(Preconditioner):
    """LODO-Residuals (reference/lodo.md §1.7): P = Πᵀ Rᵀ diag(d) R Π, R = ∏ᵢ(I + diag(wᵢ)Pᵢ).

    Width exactly 2n, ``depth`` residual layers (64 in the paper) with wᵢ ~ N(0, 1/depth) and a
    middle diagonal d = 1. θ is one (depth + 1, 2n) tensor: rows wᵢ, then d. P is near I at
    initialisation (w random) and is not guaranteed positive semi-definite if d turns negative.
    The hypergradient re-runs the network under autograd (an ablation: clarity over speed).
    """

    name = "residual"

    def __init__(self, depth: int = 64):
        self.depth = check_positive_int("depth", depth)

    def init(self, n, *, dtype, device, generator):
        width = 2 * n
        perms = torch.stack([torch.randperm(width, generator=generator) for _ in range(self.depth)])
        w = torch.randn(self.depth, width, generator=generator, dtype=torch.float64) / math.sqrt(self.depth)
        theta = torch.cat([w, torch.ones(1, width, dtype=torch.float64)])
        return theta.to(dtype=dtype, device=device), {
            "perms": perms.to(device),
            "inverse": torch.argsort(perms, dim=1).to(device),
        }

    def apply(self, theta, buffers, vectors):
        n = vectors.shape[1]
        perms, inverse = buffers["perms"], buffers["inverse"]
        z = vectors.new_zeros(vectors.shape[0], 2 * n)
        z[:, :n] = vectors
        for i in range(self.depth):
            z = z + theta[i] * z.index_select(1, perms[i])
        z = theta[self.depth] * z
        for i in range(self.depth - 1, -1, -1):
            z = z + (theta[i] * z).index_select(1, inverse[i])
        return z[:, :n]

    def direction(self, theta, buffers, m, cache):
        return self.apply(theta, buffers, m[None])[0]

    def hypergradient(self, theta, buffers, m, g, cache):
        with torch.enable_grad():
            watched = theta.detach().requires_grad_(True)
            out = self.apply(watched, buffers, m[None])[0]
            (grad,) = torch.autograd.grad(out, watched, grad_outputs=g)
        return grad
