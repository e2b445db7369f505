"""`optax_like.optim.LBFGS`: torch.optim.LBFGS's stateful surface over `optax_like.lbfgs`.

One `step(closure, *args)` is one torch `step(closure)`: ONE jitted, donated XLA computation
that runs the functional update (a `lax.while_loop` evaluating `closure` up to `max_eval` times)
and applies it. The state is torch's: `state_dict()['state'][0]` (torch keeps LBFGS's global
state under the first param) with torch's keys and list order.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import numerics
from optax_like.core.base import apply_updates
from optax_like.optim import optimizer as _base
from optax_like.optim.optimizer import Optimizer
from optax_like.optimizers.lbfgs import PARAM_GROUPS_ERROR, LBFGSState, lbfgs, lbfgs_history

__all__ = ["LBFGS"]

# torch's state keys, in the order torch's step writes them (`al` is created lazily).
_ITER_KEYS = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")


def _lbfgs_step_impl(config, opt_leaves, states, frozen, hypers, args):
    _base.TRACE_COUNT[0] += 1
    closure, mode, root_def, positions, group_defs, specs = config
    (spec,), (treedef,) = specs, group_defs
    tx = spec.build(hypers[0])

    def evaluate(params):
        leaves = (tuple(treedef.flatten_up_to(params)),)
        return _base.split_aux(closure(_base._user_tree(mode, root_def, positions, group_defs, leaves, frozen), *args))

    def value_fn(params):
        return evaluate(params)[0]

    params = treedef.unflatten(opt_leaves[0])
    # The aux of the evaluation at the params given to the step (torch's returned loss's): one
    # more forward pass, outside the line search's loop; XLA drops it when there is no aux.
    aux = evaluate(params)[1]
    updates, state = tx.update(None, states[0], params, value_fn=value_fn)
    params = apply_updates(params, updates)
    return (state.orig_loss, aux), (tuple(treedef.flatten_up_to(params)),), (state,)


_jitted_lbfgs_step = jax.jit(_lbfgs_step_impl, static_argnums=(0,), donate_argnums=(1, 2))


def _host(x, name: str) -> np.ndarray:
    """A loaded entry (torch tensor, array, Python number) as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if getattr(x, "is_complex", lambda: False)():
            raise TypeError(f"loaded LBFGS state entry {name!r} is complex; LBFGS state is real.")
        x = x.numpy()
    try:
        # A copy: on CPU, jnp.asarray of a NumPy view of a torch tensor aliases its memory, and
        # torch updates its state in place (prev_flat_grad.copy_) after the load.
        arr = np.array(x, copy=True)
    except Exception:
        raise TypeError(f"loaded LBFGS state entry {name!r} is not numeric: {x!r}") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"loaded LBFGS state entry {name!r} is not numeric: {x!r}")
    return arr


def _host_scalar(x, name: str) -> np.ndarray:
    arr = _host(x, name)
    if arr.size != 1:
        raise ValueError(f"loaded LBFGS state entry {name!r} must be a scalar, got shape {arr.shape}")
    return arr.reshape(())


def _host_int(x, name: str) -> int:
    arr = _host_scalar(x, name)
    value = float(arr)
    if value != int(value) or value < 0:
        raise ValueError(f"loaded LBFGS state entry {name!r} must be a non-negative integer, got {x!r}")
    return int(value)


def _host_vector(x, name: str, n: int) -> np.ndarray:
    arr = _host(x, name)
    if arr.shape != (n,):
        raise ValueError(
            f"loaded LBFGS state entry {name!r} has shape {arr.shape}, but the params have {n} "
            "(real) elements: LBFGS's flat vectors have one entry per real number of the params"
        )
    return arr


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

    _factory = staticmethod(lbfgs)
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
        lbfgs(**defaults)  # torch's validation and messages, before anything is built
        self._constructing = True
        try:
            Optimizer.__init__(self, params, defaults, model=model)
        finally:
            self._constructing = False
        if len(self.param_groups) != 1:
            raise ValueError(PARAM_GROUPS_ERROR)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's; LBFGS has exactly one group, so a second one raises torch's ValueError."""
        if self.param_groups and not getattr(self, "_constructing", False):
            raise ValueError(PARAM_GROUPS_ERROR)
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable, *args: Any, **kwargs: Any):  # type: ignore[override]
        """One torch `step(closure)`: returns the loss at the params given to the step (and the
        aux of that evaluation when the closure returns `(loss, aux)`)."""
        return super().step(closure, *args, **kwargs)

    def _step(self, closure=None, *args, **kwargs):
        if kwargs:
            raise TypeError(f"step() got unexpected keyword arguments {sorted(kwargs)}")
        if closure is None:
            raise TypeError("'NoneType' object is not callable")  # torch's message
        if not callable(closure):
            raise TypeError(f"{type(closure).__name__!r} object is not callable")
        hypers = self._hypers()
        self._grads = [(None,) * len(g) for g in self._grads]
        config = (closure, self._mode, self._root_def, tuple(self._positions), tuple(self._group_defs),
                  tuple(self._specs))
        (loss, aux), leaves, states = _jitted_lbfgs_step(
            config, tuple(self._opt_leaves), tuple(self._states), tuple(self._frozen), hypers, args,
        )
        self._opt_leaves, self._states = list(leaves), list(states)
        return loss if aux is None else (loss, aux[0])

    # ------------------------------------------------------------------ state (torch's layout)
    def _expected_state_keys(self, g: int, fresh) -> None:
        return None  # _import_group validates torch's LBFGS keys itself

    def _export_group(self, g: int) -> list[dict]:
        out = [dict() for _ in self.param_groups[g]["params"]]
        state: LBFGSState = self._states[g]
        func_evals, n_iter = int(state.func_evals), int(state.n_iter)
        if func_evals == 0 and n_iter == 0:
            return out  # torch: no entry before the first step
        entry = out[0]
        entry["func_evals"], entry["n_iter"] = func_evals, n_iter
        if n_iter >= 1:
            old_dirs, old_stps, ro = lbfgs_history(state)
            entry.update(
                d=state.d, t=float(state.t), old_dirs=list(old_dirs), old_stps=list(old_stps), ro=list(ro),
                H_diag=state.H_diag, prev_flat_grad=state.prev_flat_grad, prev_loss=float(state.prev_loss),
            )
        if n_iter >= 2:  # torch creates `al` at its first L-BFGS direction; filled below len(old_dirs)
            hlen = int(state.history_len)
            entry["al"] = [state.al[i] if i < hlen else None for i in range(state.al.shape[0])]
        return out

    def _import_group(self, g: int, fresh: LBFGSState, per_param: list[dict]) -> LBFGSState:
        """`fresh` with a torch-layout entry (under the first param) written in (pure)."""
        entry = per_param[0] if per_param else {}
        others = [i for i, d in enumerate(per_param) if i > 0 and d]
        if others:
            ids = [self._ids(g)[i] for i in others]
            raise ValueError(
                f"loaded LBFGS state has entries for params {ids}: LBFGS keeps its whole state "
                "under the first param (torch's layout)"
            )
        unknown = set(entry) - {"func_evals", "n_iter", "al", *_ITER_KEYS}
        if unknown:
            raise ValueError(f"loaded LBFGS state has unknown entries {sorted(unknown)}")
        n, m = fresh.d.shape[0], fresh.ro.shape[0]
        dtype = fresh.d.dtype
        new = {}
        new["func_evals"] = np.asarray(_host_int(entry.get("func_evals", 0), "func_evals"), np.int32)
        new["n_iter"] = np.asarray(_host_int(entry.get("n_iter", 0), "n_iter"), np.int32)
        present = [k for k in _ITER_KEYS if k in entry]
        if present and len(present) != len(_ITER_KEYS):
            missing = [k for k in _ITER_KEYS if k not in entry]
            raise ValueError(f"loaded LBFGS state has {present} but lacks {missing} (torch writes them together)")
        if present:
            new["d"] = _host_vector(entry["d"], "d", n)
            new["prev_flat_grad"] = _host_vector(entry["prev_flat_grad"], "prev_flat_grad", n)
            for key in ("t", "H_diag", "prev_loss"):
                new[key] = _host_scalar(entry[key], key)
            lists = {k: entry[k] for k in ("old_dirs", "old_stps", "ro")}
            for k, value in lists.items():
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"loaded LBFGS state entry {k!r} must be a list, got {type(value).__name__}")
            k = len(lists["old_dirs"])
            if len(lists["old_stps"]) != k or len(lists["ro"]) != k:
                raise ValueError(
                    f"loaded LBFGS state has {k} old_dirs, {len(lists['old_stps'])} old_stps and "
                    f"{len(lists['ro'])} ro entries; they must have the same length"
                )
            drop = max(k - m, 0)  # keep the newest history_size pairs
            kept = k - drop
            old_dirs, old_stps, ro = np.zeros((m, n)), np.zeros((m, n)), np.zeros((m,))
            for i in range(kept):
                old_dirs[i] = _host_vector(lists["old_dirs"][drop + i], f"old_dirs[{drop + i}]", n)
                old_stps[i] = _host_vector(lists["old_stps"][drop + i], f"old_stps[{drop + i}]", n)
                ro[i] = _host_scalar(lists["ro"][drop + i], f"ro[{drop + i}]")
            new.update(old_dirs=old_dirs, old_stps=old_stps, ro=ro,
                       history_start=np.asarray(0, np.int32), history_len=np.asarray(kept, np.int32))
        if "al" in entry:
            al_list = entry["al"]
            if not isinstance(al_list, (list, tuple)):
                raise TypeError(f"loaded LBFGS state entry 'al' must be a list, got {type(al_list).__name__}")
            al = np.zeros((m,))
            for i, a in enumerate(list(al_list)[drop if present else 0:][:m]):
                if a is not None:
                    al[i] = _host_scalar(a, f"al[{i}]")
            new["al"] = al
        fields = {}
        for name, like in zip(LBFGSState._fields, fresh):
            if name in new:
                value = new[name]
                arr_dtype = like.dtype if np.issubdtype(like.dtype, np.integer) else dtype
                value = jnp.asarray(value, arr_dtype)
                # Placed like the fresh leaf; an uncommitted one stays uncommitted (a committed
                # input would be a new jit cache key: a recompile of the step).
                fields[name] = jax.device_put(value, like.sharding) if like.committed else value
            else:
                fields[name] = like
        return LBFGSState(**fields)
