"""Learning-rate policies as pure functions `count -> value`, one per torch lr_scheduler.

`count` is the number of scheduler steps taken (torch's `last_epoch`; 0 right after the
scheduler's construction). Every function returns a schedule usable as `lr=` of any optimizer,
inside jit, `lax.scan`, `vmap` and `inject_hyperparams`; it carries `initial_lr` (torch's
`base_lrs`), and `cyclic_lr` / `one_cycle_lr` carry `.momentum`, the momentum (or `betas[0]`)
schedule torch cycles. Values match torch's (recursive) trajectories to ~1e-12 relative in
float64; each function's docstring notes where torch's behaviour cannot be followed (e.g.
`one_cycle_lr` past `total_steps`). `reduce_lr_on_plateau` is a transformation (it needs the
metric): chain it after the optimizer. The torch-style classes are in
`optax_like.optim.lr_scheduler` and share these formulas.
"""

from optax_like.schedules.combine import chained_scheduler, sequential_lr
from optax_like.schedules.cosine import cosine_annealing_lr, cosine_annealing_warm_restarts
from optax_like.schedules.cyclic import cyclic_lr, one_cycle_lr
from optax_like.schedules.decay import (
    constant_lr,
    exponential_lr,
    linear_lr,
    multi_step_lr,
    polynomial_lr,
    step_lr,
)
from optax_like.schedules.lambdas import lambda_lr, multiplicative_lr
from optax_like.schedules.plateau import ReduceLROnPlateauState, reduce_lr_on_plateau
from optax_like.schedules.swa import swa_lr

__all__ = [
    "ReduceLROnPlateauState",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
    "swa_lr",
]
