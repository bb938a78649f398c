"""Training problems of the LODO and AdamQLR papers, as seeded :class:`~tasks.base.Task` instances.

``build(name, seed=..., device=..., dtype=..., **options)`` returns an instance; ``describe()``
lists every task with its parameter count and options; ``TASK_NAMES`` holds the names. Data is
read from ``$LODOTUNE_DATA_DIR`` (default ``./data``) in the datasets' standard formats and never
downloaded.
"""

from tasks.base import Preconditioner, Task
from tasks.registry import TASK_NAMES, build, describe

__all__ = ["TASK_NAMES", "Preconditioner", "Task", "build", "describe"]
