"""torch.optim's optimizers as functional (init, update) pairs; names are torch's, lower case."""

from optax_like.optimizers.adam import adam
from optax_like.optimizers.sgd import sgd

__all__ = [
    "adam",
    "sgd",
]
