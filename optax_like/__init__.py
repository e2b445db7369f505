"""optax_like: torch.optim's optimizers and schedulers for JAX.

Functional core (optax style): `optax_like.sgd(...)`, `optax_like.adam(...)`, ... return
`GradientTransformation(init, update)` pairs over pytrees, built with `chain` from the blocks in
`optax_like.transforms`; they reproduce torch.optim's numbers.

Stateful torch.optim surface: `optax_like.optim.Adam(params, lr=...)` (loaded on first use).
"""

from optax_like.core import *  # noqa: F401,F403
from optax_like.core import __all__ as _core_all
from optax_like.optimizers import *  # noqa: F401,F403
from optax_like.transforms import *  # noqa: F401,F403
from optax_like import schedules  # noqa: F401  (optax_like.schedules.one_cycle_lr, ...)
from optax_like import sharding  # noqa: F401  (optax_like.sharding.state_shardings, zero1_shardings, ...)
from optax_like import checkpoint  # noqa: F401  (optax_like.checkpoint.save, load, save_state_dict, ...)
from optax_like import registry  # noqa: F401  (optax_like.registry.OPTIMIZERS: one record per optimizer)

__version__ = "0.1.0"


def __getattr__(name):
    # `optax_like.optim` (torch.optim's classes) after a plain `import optax_like`, as
    # `torch.optim` after `import torch`; imported on first use (measured: +0.11 s on a 3.5 s
    # import, 2 shared cores), so the functional API does not pay for it.
    if name == "optim":
        import importlib

        return importlib.import_module("optax_like.optim")
    raise AttributeError(f"module 'optax_like' has no attribute {name!r}")
