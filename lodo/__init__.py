"""Optimizers: LODO and its ablations, the LODO paper's baselines, AdamQLR, series saddle-free
Newton, and their registry."""

from .adamqlr import AdamQLR
from .lodo import LODO, LODOSGD, LODODiagonal, LODOGlobal, LODONoMomentum, LODOResiduals, lodo_update
from .registry import OPTIMIZERS, Hyperparameter, OptimizerSpec, build, describe, get
from .sfn_series import SeriesSFN

__all__ = [
    "LODO",
    "LODOSGD",
    "OPTIMIZERS",
    "AdamQLR",
    "Hyperparameter",
    "LODODiagonal",
    "LODOGlobal",
    "LODONoMomentum",
    "LODOResiduals",
    "OptimizerSpec",
    "SeriesSFN",
    "build",
    "describe",
    "get",
    "lodo_update",
]
