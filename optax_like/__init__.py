"""optax_like: torch.optim's optimizers and schedulers for JAX.

Functional core (optax style): `optax_like.sgd(...)`, `optax_like.adam(...)`, ... return
`GradientTransformation(init, update)` pairs over pytrees, built with `chain` from the blocks in
`optax_like.transforms`; they reproduce torch.optim's numbers (and timm's for its optimizers).

Stateful torch.optim surface: `optax_like.optim.Adam(params, lr=...)` (imported on first use).
One record per optimizer: `optax_like.registry.OPTIMIZERS`.
"""

from optax_like import core, optimizers, transforms
from optax_like.core import *  # noqa: F401,F403
from optax_like.optimizers import *  # noqa: F401,F403
from optax_like.transforms import *  # noqa: F401,F403
from optax_like import amp, checkpoint, registry, schedules, sharding
from optax_like import param_groups  # rules -> param groups (both views), timm's and HF's grouping

__version__ = "0.1.0"

_MODULES = ["amp", "checkpoint", "core", "optim", "optimizers", "param_groups", "registry", "schedules", "sharding", "transforms"]
# One source of truth: the subpackages' `__all__` (pyright cannot evaluate this expression; it sees
# the names themselves, imported above).
__all__ = sorted(set(core.__all__) | set(optimizers.__all__) | set(transforms.__all__)) + _MODULES  # pyright: ignore[reportUnsupportedDunderAll]


def __getattr__(name):
    # `optax_like.optim` (torch.optim's classes) after a plain `import optax_like`, as
    # `torch.optim` after `import torch`: imported on first use, so that the functional API
    # does not pay for the adapter's import.
    if name == "optim":
        import importlib

        return importlib.import_module("optax_like.optim")
    raise AttributeError(f"module 'optax_like' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"optim"})
