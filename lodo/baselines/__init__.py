"""The LODO paper's baseline optimizers with the authors' (Keras / TensorFlow) semantics.

See ``reference/lodo.md`` §2 for the table these follow and §7.10–11 for the pitfalls. Momentum
needs no class: Keras' heavy-ball SGD (v ← μv − lr·g, x ← x + v) is
``torch.optim.SGD(params, lr, momentum=μ, dampening=0, nesterov=False)`` for a constant lr.

Closures: the first-order methods and BFGS use the gradients already in ``.grad`` and take an
optional torch-style closure. ``SchraudolphLBFGS`` and ``OnlineLBFGS`` require a closure that
re-evaluates the loss on the same batch and calls ``backward()``; ``LevenbergMarquardt`` and
``Newton`` require a closure that returns the loss with its graph and does not call
``backward()``.
"""

from lodo.baselines.bfgs import BFGS
from lodo.baselines.keras_adam import KerasAdam
from lodo.baselines.keras_rmsprop import KerasRMSprop
from lodo.baselines.lars import PaperLARS
from lodo.baselines.lbfgs import OnlineLBFGS, SchraudolphLBFGS
from lodo.baselines.levenberg_marquardt import LevenbergMarquardt
from lodo.baselines.newton import Newton
from lodo.baselines.yogi import PaperYogi

__all__ = [
    "BFGS",
    "KerasAdam",
    "KerasRMSprop",
    "LevenbergMarquardt",
    "Newton",
    "OnlineLBFGS",
    "PaperLARS",
    "PaperYogi",
    "SchraudolphLBFGS",
]
