"""timm.optim.Kron (PSGD Kron) as a functional optimizer."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union

from optax_like.core import hyperparams
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import integer_args
from optax_like.optimizers._timm import decay_lr, validate_scalar
from optax_like.transforms.combine import chain
from optax_like.transforms.kron import DEFAULT_SEED, scale_by_kron


@integer_args("max_size_triangular", "min_ndim_triangular", "flatten_start_dim", "flatten_end_dim", "param_group")
def kron(
    lr: ScalarOrSchedule = 0.001,
    momentum: ScalarOrSchedule = 0.9,
    weight_decay: ScalarOrSchedule = 0.0,
    preconditioner_update_probability: Optional[Union[Callable, float]] = None,
    max_size_triangular: int = 2048,
    min_ndim_triangular: int = 2,
    memory_save_mode: Optional[str] = None,
    momentum_into_precond_update: bool = True,
    precond_lr: ScalarOrSchedule = 0.1,
    precond_init_scale: float = 1.0,
    mu_dtype: Any = None,
    precond_dtype: Any = None,
    decoupled_decay: bool = False,
    corrected_weight_decay: bool = False,
    flatten: bool = False,
    flatten_start_dim: int = 2,
    flatten_end_dim: int = -1,
    stochastic_weight_decay: bool = False,
    deterministic: bool = False,
    *,
    max_lr_snapshot: Optional[float] = None,
    param_group: int = 0,
) -> GradientTransformation:
    """PSGD Kron (Li's Kronecker-factored preconditioner, Walters' kron_torch) as timm.optim.Kron
    (timm 1.0.31) computes it: momentum, debiased, preconditioned by `Q^T Q` with one factor per
    dim (triangular up to `max_size_triangular`, else diagonal; `memory_save_mode` "one_diag",
    "smart_one_diag", "all_diag"), the factors fitted to a random probe when the update counter
    reaches `1 / preconditioner_update_probability` (default: timm's
    `precond_update_prob_schedule`, 1.0 for 500 steps, then annealed to 0.03), the step's RMS
    capped at 1.1; coupled or decoupled (`decoupled_decay`, `corrected_weight_decay`: `lr**2 /
    max_lr`) weight decay, `stochastic_weight_decay`. The step: `transforms.kron.scale_by_kron`.

    Randomness: timm draws its balance decisions and stochastic decays from Python's
    `random.Random(1337)` and its probes from torch's global generator; here every draw is
    `transforms.kron.kron_draws(seed, leaf index, step, ...)`, a pure function of the seed
    (1337, as timm's; another: `kron_with_seed(seed, **kwargs)`), the param's position and its
    step, so the same run gives the same numbers, and a state loaded from a state dict continues with the draws the uninterrupted run
    makes (timm's `deterministic` seeds a generator per draw for that; accepted and ignored here).
    The numbers equal timm's when timm is given these draws (tests: `registry`'s `draws`).

    `param_group`: the index of the param group this optimizer steps among the groups of one
    timm Kron (its draws are the group's own, `kron_draws(..., group=param_group)`; the adapter
    class and `param_groups` pass it per group: the adapter option `group_index`); 0 for one group.

    `preconditioner_update_probability`: None, a float (timm's Python float math), or a callable
    `step -> probability` traced on the step count (a jnp function). `mu_dtype` /
    `precond_dtype`: a floating dtype or its name (torch's dtypes are read by name; another dtype
    is a ValueError naming the argument). `max_lr_snapshot`:
    the peak lr for `corrected_weight_decay` with a schedule or traced lr (timm's snapshot of its
    constructor's lr). Complex params are refused at init with timm's NotImplementedError (timm:
    at its first step; its float32 triangular solve drops their imaginary part).

    timm counterpart: `timm.optim.Kron(params, lr=0.001, momentum=0.9, weight_decay=0.0,
    preconditioner_update_probability=None, max_size_triangular=2048, min_ndim_triangular=2,
    memory_save_mode=None, momentum_into_precond_update=True, precond_lr=0.1,
    precond_init_scale=1.0, mu_dtype=None, precond_dtype=None, decoupled_decay=False,
    corrected_weight_decay=False, flatten=False, flatten_start_dim=2, flatten_end_dim=-1,
    stochastic_weight_decay=False, deterministic=False)`; `create_optimizer_v2` reaches it as
    'kron', 'kronw' (decoupled_decay) and 'kronc' (corrected_weight_decay).
    """
    return _kron(DEFAULT_SEED, **{k: v for k, v in locals().items()})


def kron_with_seed(seed: int, **kwargs: Any) -> GradientTransformation:
    """`kron(**kwargs)` drawing from `seed` instead of timm's 1337 (`kron` and the stateful
    class keep timm's arguments only: their param groups are timm's)."""
    inspect.signature(kron).bind(**kwargs)  # kron's arguments only
    return _kron(int(seed), **{**_DEFAULTS, **kwargs})


def _kron(seed, *, lr, momentum, weight_decay, preconditioner_update_probability, max_size_triangular,
          min_ndim_triangular, memory_save_mode, momentum_into_precond_update, precond_lr, precond_init_scale,
          mu_dtype, precond_dtype, decoupled_decay, corrected_weight_decay, flatten, flatten_start_dim,
          flatten_end_dim, stochastic_weight_decay, deterministic, max_lr_snapshot,
          param_group) -> GradientTransformation:
    del deterministic
    validate_scalar(lr, "lr", "learning rate")
    v.check(momentum, "momentum", lambda x: 0.0 <= x < 1.0, "Invalid beta parameter: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    prob = preconditioner_update_probability
    if not callable(prob) and prob is not None and hyperparams.is_number(prob) and float(prob) == 0.0:
        raise ValueError("preconditioner_update_probability=0: timm divides by it (ZeroDivisionError at its first "
                         "step); give a probability in (0, 1], a callable, or None for timm's schedule.")
    wd_lr = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)  # (timm checks a corrected max lr always)
    # (timm checks neither dtype: an integer one fails at its first step, RuntimeError or NotImplementedError)
    mu_dtype = hyperparams.as_dtype(mu_dtype, "mu_dtype", allowed="floating")
    precond_dtype = hyperparams.as_dtype(precond_dtype, "precond_dtype", allowed="floating")
    return chain(scale_by_kron(
        lr, momentum, weight_decay, preconditioner_update_probability, precond_lr, decay_lr=wd_lr,
        max_size_triangular=max_size_triangular, min_ndim_triangular=min_ndim_triangular,
        memory_save_mode=memory_save_mode, momentum_into_precond_update=momentum_into_precond_update,
        precond_init_scale=precond_init_scale, mu_dtype=mu_dtype,
        precond_dtype=precond_dtype, decoupled_decay=decoupled_decay, flatten=flatten,
        flatten_start_dim=flatten_start_dim, flatten_end_dim=flatten_end_dim,
        stochastic_weight_decay=stochastic_weight_decay, seed=seed, group=param_group))


_DEFAULTS = {k: p.default for k, p in inspect.signature(kron).parameters.items()}
