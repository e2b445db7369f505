"""`optax_like.optim.LBFGS`: torch.optim.LBFGS's stateful surface over `optax_like.lbfgs`.

One `step(closure, *args)` is one torch `step(closure)`: ONE jitted, donated XLA computation
that runs the functional update (a `lax.while_loop` evaluating `closure` up to `max_eval` times)
and applies it. The state is torch's: `state_dict()['state'][0]` (torch keeps LBFGS's global
state under the first param) with torch's keys and list order, through the adapter's one
converter (optim/_state_dict.py) and `LBFGSState`'s declaration (optimizers/lbfgs.py).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, cast

import numpy as np

from optax_like.optim import _step
from optax_like.optim.optimizer import Optimizer, class_factory
from optax_like.optimizers.lbfgs import PARAM_GROUPS_ERROR, lbfgs

__all__ = ["LBFGS"]


def lbfgs_update(config: _step.Config, opt_leaves, states, frozen, hypers, grads, args, skipped, amp=None,
                 count=None):
    """LBFGS's rule for the adapter's jitted step (optim/_step.py): one torch `step(closure)`,
    the functional update evaluating the closure as often as torch's; no pending gradients."""
    (spec,), (treedef,) = config.specs, config.layout.group_defs
    tx = spec.build(hypers[0])

    closure = cast(Callable, config.closure)  # not None: LBFGS._step refuses a step without one

    def evaluate(params):
        leaves = (tuple(treedef.flatten_up_to(params)),)
        return _step.split_aux(closure(_step.user_tree(config.layout, leaves, frozen), *args))

    def value_fn(params):
        return evaluate(params)[0]

    params = treedef.unflatten(opt_leaves[0])
    # The aux of the evaluation at the params given to the step (torch's returned loss's): one
    # more forward pass, outside the line search's loop; XLA drops it when there is no aux.
    aux = evaluate(params)[1]
    updates, state = tx.update(None, states[0], params, value_fn=value_fn)
    params = spec.apply(params, updates, 0, count)
    return (state.orig_loss, aux, None, None), (tuple(treedef.flatten_up_to(params)),), (state,), skipped


class LBFGS(Optimizer):
    """torch.optim.LBFGS over `optax_like.lbfgs` (see its docstring for the algorithm).

        opt = optax_like.optim.LBFGS(params, lr=1, max_iter=20, line_search_fn="strong_wolfe")
        loss = opt.step(loss_fn, *batch)   # loss_fn(params, *batch) -> scalar; torch's closure
        loss, aux = opt.step(loss_and_metrics_fn, *batch)   # loss_fn returning (loss, aux)

    `step(closure, *args)` evaluates `closure(params, *args)` (differentiated with
    `jax.value_and_grad`) as often as torch's step calls its closure, inside one jitted, donated
    call, and returns torch's value: the loss at the params given to the step, as a device array
    in the params' dtype (no host sync); `(loss, aux)` when the closure returns `(loss, aux)`,
    aux from the same evaluation (one extra forward pass in the same jitted call; none without
    aux). A closure is required (torch: `TypeError`). Pending
    `backward()` gradients are discarded (torch's closure begins with `zero_grad()`).

    Hyperparameters: `lr`, `tolerance_grad` and `tolerance_change` are traced (editing
    `param_groups[0]['lr']`, or an lr scheduler, takes effect at the next step without a
    recompile); `max_iter`, `max_eval` (None -> `max_iter * 5 // 4` on the host at construction,
    as torch), `history_size` and `line_search_fn` are compile-time: editing them recompiles
    once and carries the state over (a smaller `history_size` keeps the newest pairs).

    State: torch's layout, under the first param id only: `{'func_evals', 'n_iter'}` (Python
    ints) after a step, `d, t, old_dirs, old_stps, ro, H_diag, prev_flat_grad, prev_loss` after
    the first iteration, `al` after the second (lists in torch's order, oldest first, `al`
    padded with None like torch's). `t` and `prev_loss` are Python floats (torch's usual
    types); `H_diag`, `ro` and `al` entries are 0-d arrays (torch's 0-d tensors). `load_state_dict` accepts torch's LBFGS state dicts (tensors) and ours; it is
    atomic.

    Deliberate differences from torch: `add_param_group` raises torch's construction error
    `ValueError(PARAM_GROUPS_ERROR)` (torch accepts the group and fails with an AssertionError
    at the next step); loading a history longer than `history_size` keeps the newest
    `history_size` pairs (torch would keep them all and never shrink the list).
    torch counterpart: `torch.optim.LBFGS(params, lr=1, max_iter=20, max_eval=None,
    tolerance_grad=1e-7, tolerance_change=1e-9, history_size=100, line_search_fn=None)`.
    """

    _factory = staticmethod(class_factory(lbfgs))
    _static = ("max_iter", "max_eval", "history_size")

    def __init__(
        self,
        params: Any,
        lr: Any = 1,
        max_iter: int = 20,
        max_eval: Optional[int] = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: Optional[str] = None,
        *,
        model: Any = None,
    ) -> None:
        if max_eval is None and isinstance(max_iter, (int, np.integer)) and not isinstance(max_iter, bool):
            max_eval = max_iter * 5 // 4
        defaults = dict(
            lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change, history_size=history_size, line_search_fn=line_search_fn,
        )
        Optimizer.__init__(self, params, defaults, model=model)
        if len(self.param_groups) != 1:
            raise ValueError(PARAM_GROUPS_ERROR)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's; LBFGS has exactly one group, so a second one raises torch's ValueError."""
        if self.param_groups and not self._constructing:
            raise ValueError(PARAM_GROUPS_ERROR)
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable, *args: Any, **kwargs: Any):  # type: ignore[override]
        """One torch `step(closure)`: returns the loss at the params given to the step (and the
        aux of that evaluation when the closure returns `(loss, aux)`)."""
        return super().step(closure, *args, **kwargs)

    def _step(self, closure=None, *args, **kwargs):
        if "grad_scaler" in kwargs:
            raise TypeError(
                "LBFGS.step() takes no grad_scaler: torch's GradScaler cannot drive LBFGS (scaler.step "
                "refuses closures, and LBFGS's step needs one). Step LBFGS without loss scaling.")
        if kwargs:
            raise TypeError(f"step() got unexpected keyword arguments {sorted(kwargs)}")
        if closure is None:
            raise TypeError("'NoneType' object is not callable")  # torch's message
        if not callable(closure):
            raise TypeError(f"{type(closure).__name__!r} object is not callable")
        return self._run_step(lbfgs_update, self._hypers(), closure, args)
