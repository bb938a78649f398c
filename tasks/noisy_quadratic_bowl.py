"""The noisy quadratic bowl (LODO paper §4.1; lodo.md §4.1 and §7.12).

L(x) = ½ (x − c)ᵀ H (x − c) with H = Q diag(λ) Qᵀ, λ geometric from 0.001 to 1, Q the Q factor of
NumPy's QR of an n×n standard-normal matrix (no sign fix; a new Q per seed). x₀ = 0 and c₀ = 0.
Every fresh evaluation (:meth:`train_loss`) first moves the centre by a random-walk step
ξ ~ N(0, σ²I); same-batch evaluations and metrics do not move it (the code's semantics; the paper
says "perturbed at every evaluation", lodo.md §6.8).

A method that jumps to the current minimum every step pays ½ ξᵀHξ next, whose expectation
½σ² tr(H) (7.411847253913 at n = 100, σ = 1) is :attr:`optimal_loss`.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks._rng import numpy_generator, torch_generator
from tasks._spec import Option, TaskSpec, positive_float, positive_int
from tasks._vector import VectorModel
from tasks.base import Preconditioner

NAME = "noisy-quadratic-bowl"
# The paper's Hessian-approximation error averages over 100 random unit vectors.
HESSIAN_ERROR_PROBES = 100


def eigenvalues(n: int) -> np.ndarray:
    """λ_k = exp(linspace(ln 0.001, ln 1, n)), float64."""
    return np.exp(np.linspace(np.log(1e-3), np.log(1.0), n))


class NoisyQuadraticBowl:
    """A seeded bowl; see the module docstring. Metrics: ``loss`` (current centre), ``optimal_loss``
    and, given a preconditioner G, ``hessian_error`` = sqrt(mean ‖v + G·Hv‖²) over random unit v.
    """

    name = NAME

    def __init__(self, *, seed: int, device: torch.device, dtype: torch.dtype, n: int, sigma: float) -> None:
        self.device, self.dtype = device, dtype
        self.sigma = sigma
        lam = eigenvalues(n)
        rotation, _ = np.linalg.qr(numpy_generator(seed, "rotation").standard_normal((n, n)))
        self.hessian = torch.tensor((rotation * lam) @ rotation.T, dtype=dtype, device=device)
        self.optimal_loss = 0.5 * sigma**2 * float(lam.sum())
        self.centre = torch.zeros(n, dtype=dtype, device=device)
        self.model = VectorModel(torch.zeros(n, dtype=dtype, device=device))
        self._noise = torch_generator(seed, "noise")
        self._probes = torch_generator(seed, "probes")

    @property
    def num_parameters(self) -> int:
        return self.model.x.numel()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.model.x]

    def _loss(self) -> torch.Tensor:
        offset = self.model.x - self.centre
        return 0.5 * offset @ (self.hessian @ offset)

    def train_loss(self) -> torch.Tensor:
        step = torch.randn(len(self.centre), generator=self._noise, dtype=torch.float64) * self.sigma
        self.centre = self.centre + step.to(device=self.device, dtype=self.dtype)
        return self._loss()

    def same_batch_loss(self) -> torch.Tensor:
        return self._loss()

    def hessian_vector_products(self, vectors: torch.Tensor) -> torch.Tensor:
        """H·v for each row of ``vectors`` (k, n); exact, H being known and symmetric."""
        return vectors @ self.hessian

    @torch.no_grad()
    def hessian_error(self, preconditioner: Preconditioner, probes: int = HESSIAN_ERROR_PROBES) -> float:
        """sqrt((1/k) Σ ‖v + G(Hv)‖²) over k random unit vectors v (≈ ‖I + GH‖_F / √n)."""
        vectors = torch.randn(probes, len(self.centre), generator=self._probes, dtype=torch.float64)
        vectors = (vectors / vectors.norm(dim=1, keepdim=True)).to(device=self.device, dtype=self.dtype)
        residuals = vectors + preconditioner(self.hessian_vector_products(vectors))
        return float(residuals.square().sum(dim=1).mean().sqrt())

    def metrics(self, *, preconditioner: Preconditioner | None = None) -> dict[str, float]:
        with torch.no_grad():
            result = {"loss": float(self._loss()), "optimal_loss": self.optimal_loss}
        if preconditioner is not None:
            result["hessian_error"] = self.hessian_error(preconditioner)
        return result


SPEC = TaskSpec(
    name=NAME,
    description=(
        "LODO §4.1: ½(x−c)ᵀH(x−c), H = Q diag(geometric 0.001..1) Qᵀ with a random rotation per seed, "
        "centre a N(0, σ²I) random walk moved on every fresh evaluation; optimal loss ½σ²·tr(H)."
    ),
    dtype=torch.float64,
    options=(
        Option("n", 100, "dimension", positive_int),
        Option("sigma", 1.0, "standard deviation of each random-walk step of the centre", positive_float),
    ),
    build=NoisyQuadraticBowl,
    count_parameters=lambda n, sigma: n,
)
