"""Optimizers: LODO and its ablations, the LODO paper's baselines, and their registry."""

from .lodo import LODO, LODOSGD, LODODiagonal, LODOGlobal, LODONoMomentum, LODOResiduals, lodo_update
from .registry import OPTIMIZERS, Hyperparameter, OptimizerSpec, build, describe, get

__all__ = [
    "LODO",
    "LODOSGD",
    "OPTIMIZERS",
    "Hyperparameter",
    "LODODiagonal",
    "LODOGlobal",
    "LODONoMomentum",
    "LODOResiduals",
    "OptimizerSpec",
    "build",
    "describe",
    "get",
    "lodo_update",
]
