"""Populations of one task: P seeded instances whose training losses are evaluated as one program.

A GA generation trains P members on the same task with the same options; only their seeds (and
the optimizer's hyperparameters) differ. A :class:`Population` keeps the P instances that
:func:`tasks.build` makes — each still draws its minibatches, noise and query pixels from its own
streams, exactly as a lone trial would — and evaluates all members' losses at once from one
``[P, n]`` tensor of flat parameters (row i: member i's parameters in ``task.parameters()``
order). After training, :meth:`Population.write_back` puts each row into its instance, so the
task's own ``metrics`` run unchanged.

Forms, by task class:

* Rosenbrock (both variants): the formula on the ``[P, 2]`` rows; the per-trial ops, elementwise.
* The noisy quadratic bowl: the P Hessians as one ``[P, n, n]`` tensor (one ``bmm`` a step), the
  P centres as ``[P, n]``; each member's random-walk steps come from its own stream, many steps'
  uniforms in one draw and turned into normals as one batched transform (:class:`BowlPopulation`).
* Tasks with model outputs (the MLPs, the autoregression CNNs): each member's next minibatch from
  its instance (``next_output_batch``), then the loss of the shared module structure through
  ``torch.func.functional_call`` — ``vmap`` over the members (one batched matmul per layer), or
  a ``loop`` over them (the depthwise convolutions of the CNN are slower under ``vmap`` on a CPU;
  bench/ga_generation.py measures both). ResNet-18 (batch norm, augmentation) is not vectorized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch.func import functional_call, vmap

from tasks.autoregression import AutoregressionTask
from tasks.base import LossForm, OutputTask, Task, output_loss
from tasks.noisy_quadratic_bowl import NoisyQuadraticBowl
from tasks.rosenbrock import Rosenbrock
from tasks.supervised import SupervisedTask

Formulation = Literal["auto", "vmap", "loop"]
FORMULATIONS = ("auto", "vmap", "loop")
# The bowl's noise: each member's uniforms for up to this many steps in one draw, all members'
# within this many bytes (half a core's L2 here; 0.25 to 8 MB timed the same at P = 32, n = 100).
NOISE_CHUNK = 256
NOISE_CHUNK_BYTES = 2**20
# The tasks with a population form, by registry name (ResNet-18 keeps the per-trial path).
SUPPORTED = (
    "rosenbrock",
    "rosenbrock-classic",
    "noisy-quadratic-bowl",
    "digits-mlp",
    "diabetes-mlp",
    "fashion-mnist-mlp",
    "uci-energy",
    "uci-protein",
    "digits-autoregression",
    "mnist-autoregression",
)


def supports(task: str) -> bool:
    return task in SUPPORTED


class Population:
    """P instances of one task; see the module docstring. Subclasses implement :meth:`losses`."""

    formulation = "elementwise"

    def __init__(self, members: Sequence[Task]) -> None:
        self.members = list(members)

    @property
    def size(self) -> int:
        return len(self.members)

    def initial_parameters(self) -> torch.Tensor:
        """``[P, n]``: every member's parameters as built (its seeded initialisation)."""
        return torch.stack(
            [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in self.members]
        )

    def losses(self, params: torch.Tensor) -> torch.Tensor:
        """``[P]``: each member's training loss at its row of ``params`` on a fresh minibatch (fresh
        noise), as its ``train_loss()`` would draw it; differentiable in ``params``."""
        raise NotImplementedError

    def losses_and_gradients(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P]`` losses (as :meth:`losses` draws them) and ``[P, n]`` gradients, both detached.

        By autograd through :meth:`losses`, over the finite members only: a non-finite member's
        row is zero (the runner drops that member), and nothing of it reaches the others.
        """
        watched = params.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = self.losses(watched)
            finite = torch.isfinite(losses.detach())
            if not bool(finite.any()):
                return losses.detach(), torch.zeros_like(watched)
            (grads,) = torch.autograd.grad(losses[finite].sum(), watched)
        return losses.detach(), grads

    def keep(self, index: Sequence[int]) -> None:
        """Keep the members ``index`` (positions in the current order), in that order."""
        self.members = [self.members[i] for i in index]

    def write_back(self, params: torch.Tensor) -> None:
        """Put row i of ``params`` (and any per-member state this form holds) into member i."""
        with torch.no_grad():
            for member, row in zip(self.members, params.detach(), strict=True):
                offset = 0
                for p in member.parameters():
                    p.copy_(row[offset : offset + p.numel()].view_as(p))
                    offset += p.numel()


class RosenbrockPopulation(Population):
    def __init__(self, members: Sequence[Rosenbrock]) -> None:
        super().__init__(members)
        first = members[0]
        self.a, self.b, self.scale = first.a, first.b, first.scale

    def losses(self, params: torch.Tensor) -> torch.Tensor:
        x, y = params[:, 0], params[:, 1]
        return self.scale * (self.a * (1 - x) ** 2 + self.b * (y - x**2) ** 2)


class BowlPopulation(Population):
    """The bowls' Hessians and centres stacked; each centre moves by its own member's noise.

    ``torch.randn`` of n ≥ 16 float64 values on a CPU draws n uniforms (16 more when n is not a
    multiple of 16) and turns each group of 16 into normals by Box–Muller, recomputing the last 16
    from the extra uniforms. That is reproduced here for many steps at once: each member draws the
    uniforms of its next K steps (:data:`NOISE_CHUNK`, :data:`NOISE_CHUNK_BYTES`) in one
    ``torch.rand`` from its own generator, and the whole ``[P, K, n]`` block of normals is one
    batched transform. Per member and step that replaces a ``randn`` call of ~3 µs by a share of
    two calls; the normals agree with ``randn``'s to an ulp (vectorized ``log``/``sin``/``cos``),
    and are scaled by σ once per chunk. :meth:`write_back` leaves each member's
    generator where its lone trial's would be. Smaller n draw per member and step (torch's other
    path).
    """

    def __init__(self, members: Sequence[NoisyQuadraticBowl]) -> None:
        super().__init__(members)
        hessians = torch.stack([m.hessian for m in members])
        # Row-vector times Hᵀ per member is bmm's fastest layout at n = 100, P = 32 (23 µs, against
        # 57 µs for H·x and 132 µs for a broadcast product and sum).
        self.transposed = hessians.transpose(1, 2).contiguous()
        self.centres = torch.stack([m.centre for m in members])
        first = members[0]
        self.sigma, self.device, self.dtype = first.sigma, first.device, first.dtype
        n = first.num_parameters
        self._batched = n >= 16
        self._draws = n + (16 if n % 16 else 0)  # uniforms per step
        self._chunk = torch.empty(len(members), 0, n, dtype=self.dtype, device=self.device)
        self._used = 0  # steps of the chunk consumed
        self._before: list[torch.Tensor] = []  # each generator's state before its chunk's draw
        self._after: list[torch.Tensor] = []  # and after it

    def _refill(self) -> None:
        size, n = len(self.members), self._chunk.shape[2]
        steps = max(1, min(NOISE_CHUNK, NOISE_CHUNK_BYTES // (8 * size * self._draws)))
        uniforms = torch.empty(size, steps, self._draws, dtype=torch.float64)
        after, self._before, self._after = self._after, [], []
        for i, (member, row) in enumerate(zip(self.members, uniforms, strict=True)):
            if after:  # write_back may have moved it back to where the trial would be
                member._noise.set_state(after[i])
            self._before.append(member._noise.get_state())
            torch.rand(row.shape, generator=member._noise, dtype=torch.float64, out=row)
            self._after.append(member._noise.get_state())
        normals = torch.empty(size, steps, n, dtype=torch.float64)
        _box_muller(uniforms[..., : n - n % 16], out=normals[..., : n - n % 16])
        if n % 16:  # torch recomputes the last 16 values from the 16 extra uniforms
            _box_muller(uniforms[..., n:], out=normals[..., n - 16 :])
        self._chunk = normals.mul_(self.sigma).to(device=self.device, dtype=self.dtype)
        self._used = 0

    def _next_steps(self) -> torch.Tensor:
        """``[P, n]``: every member's next random-walk step σξ, as its ``train_loss`` draws it."""
        if not self._batched:
            noise = torch.empty(len(self.members), self._chunk.shape[2], dtype=torch.float64)
            for member, row in zip(self.members, noise, strict=True):
                torch.randn(row.shape, generator=member._noise, dtype=torch.float64, out=row)
            return (noise * self.sigma).to(device=self.device, dtype=self.dtype)
        if self._used >= self._chunk.shape[1]:
            self._refill()
        self._used += 1
        return self._chunk[:, self._used - 1]

    def _offsets(self, params: torch.Tensor) -> torch.Tensor:
        """Move every centre by its member's next noise step; the offsets from the new centres."""
        self.centres = self.centres + self._next_steps()
        return params - self.centres

    def _products(self, offsets: torch.Tensor) -> torch.Tensor:
        """H·(x − c) per member."""
        return torch.bmm(offsets.unsqueeze(1), self.transposed).squeeze(1)

    def losses(self, params: torch.Tensor) -> torch.Tensor:
        offsets = self._offsets(params)
        return 0.5 * torch.linalg.vecdot(offsets, self._products(offsets))

    def losses_and_gradients(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient in closed form, H·(x − c) (each H symmetric to rounding): one batched
        product instead of autograd's two, and no graph."""
        offsets = self._offsets(params.detach())
        products = self._products(offsets)
        return 0.5 * torch.linalg.vecdot(offsets, products), products

    def keep(self, index: Sequence[int]) -> None:
        super().keep(index)
        index = list(index)
        rows = torch.as_tensor(index, device=self.transposed.device)
        self.transposed = self.transposed.index_select(0, rows)
        self.centres = self.centres.index_select(0, rows)
        self._chunk = self._chunk.index_select(0, rows)
        if self._after:
            self._before = [self._before[i] for i in index]
            self._after = [self._after[i] for i in index]

    def write_back(self, params: torch.Tensor) -> None:
        super().write_back(params)
        for member, centre in zip(self.members, self.centres, strict=True):
            member.centre = centre.clone()
        if self._before:  # each generator as if it had drawn only the steps taken
            for member, before in zip(self.members, self._before, strict=True):
                member._noise.set_state(before)
                torch.rand(self._used * self._draws, generator=member._noise, dtype=torch.float64)


def _box_muller(uniforms: torch.Tensor, *, out: torch.Tensor) -> None:
    """torch's CPU ``normal_fill_16`` on every group of 16 along the last dimension, into ``out``:
    u1 = 1 − the first 8, u2 = the last 8; r = sqrt(−2 log u1), θ = 2π u2; r cos θ, then r sin θ.
    In place where it can be: the temporaries of a chunk are larger than a core's cache."""
    groups = uniforms.unflatten(-1, (-1, 2, 8))
    cosines, sines = out.unflatten(-1, (-1, 2, 8)).unbind(-2)
    radius = torch.rsub(groups[..., 0, :], 1).log_().mul_(-2).sqrt_()
    theta = groups[..., 1, :] * (2 * math.pi)
    torch.cos(theta, out=cosines).mul_(radius)
    torch.sin(theta, out=sines).mul_(radius)


class OutputPopulation(Population):
    """Members with a model: the same module structure, each member's own batches and parameters."""

    def __init__(self, members: Sequence[OutputTask], formulation: Literal["vmap", "loop"]) -> None:
        super().__init__(members)
        self.formulation = formulation
        self.module = members[0].model
        self.shapes = [(name, p.shape) for name, p in self.module.named_parameters()]
        _share_data(members)

    def _unflatten(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape in self.shapes:
            size = shape.numel()
            out[name] = row[..., offset : offset + size].view(*row.shape[:-1], *shape)
            offset += size
        return out

    def _member_loss(
        self, row: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, form
    ) -> torch.Tensor:
        return output_loss(form, functional_call(self.module, self._unflatten(row), (inputs,)), targets)

    def _next_batches(self) -> tuple[torch.Tensor, torch.Tensor, LossForm]:
        """Every member's next minibatch, stacked ``[P, B, …]``, and the loss form. A supervised
        task's come from the training set the members share in one gather of their stacked
        indices (two gathers per member cost ~13% of a digits-mlp step at P = 32)."""
        first = self.members[0]
        if isinstance(first, SupervisedTask):
            rows = torch.stack([m.next_batch_indices() for m in self.members])
            inputs, targets = first.train_set
            return inputs[rows], targets[rows], first.loss_form
        batches = [m.next_output_batch() for m in self.members]
        inputs = torch.stack([b.inputs for b in batches])
        return inputs, torch.stack([b.targets for b in batches]), batches[0].loss

    def losses(self, params: torch.Tensor) -> torch.Tensor:
        inputs, targets, form = self._next_batches()
        if self.formulation == "loop":
            return torch.stack(
                [
                    self._member_loss(row, x, y, form)
                    for row, x, y in zip(params, inputs, targets, strict=True)
                ]
            )
        return vmap(lambda row, x, y: self._member_loss(row, x, y, form))(params, inputs, targets)


def _share_data(members: Sequence[Task]) -> None:
    """Members read one copy of the datasets (each instance loaded its own; only seeds differ)."""
    first = members[0]
    for member in members[1:]:
        if isinstance(member, SupervisedTask):
            member.train_set, member.validation_set, member.test_set = (
                first.train_set,
                first.validation_set,
                first.test_set,
            )
        elif isinstance(member, AutoregressionTask):
            member.train_images = first.train_images
            member.validation_images = first.validation_images
            member.test_images = first.test_images


def activation_bytes(task: Task) -> int:
    """What one training minibatch of ``task`` keeps for the backward pass, estimated from one
    forward pass (on this instance's next batch: use a probe instance, not a member): three times
    the bytes every module outputs (the outputs, the inputs elementwise functions save, their
    gradients). Zero for tasks without a model batch (Rosenbrock, the bowl)."""
    if not isinstance(task, OutputTask):
        return 0
    batch = task.next_output_batch()
    total = [batch.inputs.numel() * batch.inputs.element_size()]

    def count(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in batch.model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            batch.model(batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return 3 * total[0]


def default_formulation(task: str, device: torch.device) -> Literal["vmap", "loop"]:
    """``loop`` for the CNNs on a CPU (measured slower under ``vmap``), ``vmap`` elsewhere."""
    if task.endswith("-autoregression") and device.type == "cpu":
        return "loop"
    return "vmap"


def population(name: str, members: Sequence[Task], formulation: Formulation = "auto") -> Population:
    """The population form of task ``name`` over its instances ``members`` (at least one)."""
    if name not in SUPPORTED:
        raise ValueError(f"Invalid task for a population: {name!r} (allowed: {' | '.join(SUPPORTED)})")
    if formulation not in FORMULATIONS:
        raise ValueError(f"Invalid formulation: {formulation!r} (allowed: {' | '.join(FORMULATIONS)})")
    first = members[0]
    if isinstance(first, Rosenbrock):
        return RosenbrockPopulation(members)
    if isinstance(first, NoisyQuadraticBowl):
        return BowlPopulation(members)
    chosen = default_formulation(name, first.device) if formulation == "auto" else formulation
    return OutputPopulation(members, chosen)
