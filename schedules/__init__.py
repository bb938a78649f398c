"""GA schedules, search spaces and the paper's tuned values, as data files with loaders."""

from .paper import paper_values

__all__ = ["paper_values"]
