"""torch.optim.swa_utils: `SWALR`, `AveragedModel`, the averaging functions and `update_bn`.

    swa_model = swa_utils.AveragedModel(params)                       # SWA (equal weights)
    ema_model = swa_utils.AveragedModel(params, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.999))
    ...
    ema_model.update_parameters(optimizer.params)                     # after optimizer.step(...)
    ema_model.module                                                  # the averaged tree
    loss_fn(ema_model.module, batch)                                  # torch: ema_model(input)

`AveragedModel` is a host-side holder of `optax_like.transforms.averaging`'s pure functions (one
jitted call per `update_parameters`); inside a jitted train step use those directly
(`optax_like.ema_params(decay)`, `optax_like.swa_params()`). The numbers are torch's (see that
module). Deliberate differences: the model is a pytree (e.g. `nnx.state(model)`); "buffers" are
the leaves `is_buffer(name, leaf)` selects (default: integer leaves, e.g. BatchNorm's
`num_batches_tracked`), copied at each update unless `use_buffers=True`; the averaging
functions are pure (a multi fn returns the new leaves instead of updating its first argument);
`n_averaged` is an int32 device scalar (torch: int64).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp

from optax_like.core.tree import check_same_structure, is_none
from optax_like.optim._names import param_name
from optax_like.optim.lr_scheduler import LRScheduler, _format_param
from optax_like.schedules import swa as _swa
from optax_like.schedules._common import HOST
from optax_like.transforms import averaging as _averaging

__all__ = [
    "AveragedModel",
    "SWALR",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "update_bn",
]

get_ema_multi_avg_fn = _averaging.ema_multi_avg
get_swa_multi_avg_fn = _averaging.swa_multi_avg
get_ema_avg_fn = _averaging.ema_avg
get_swa_avg_fn = _averaging.swa_avg


def _default_is_buffer(name: str, leaf) -> bool:
    return not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


class AveragedModel:
    """torch.optim.swa_utils.AveragedModel over a pytree of params.

    `AveragedModel(model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False,
    is_buffer=None)`: `module` is a copy of `model`; `update_parameters(params)` copies `params`
    at its first call and averages after that (torch's rule: `multi_avg_fn`, else `avg_fn`,
    else the SWA mean); buffers (see the module docstring) are copied unless `use_buffers`.
    `n_averaged` counts the calls. `state_dict()` is torch's layout: `n_averaged`, then
    `module.<name>` per leaf (names as `optim.named_parameters`); `load_state_dict` reads it.
    A `params` tree of another structure raises a ValueError naming the first differing path.
    `device` places the copy (`jax.device_put`).
    """

    def __init__(self, model: Any, device: Any = None, avg_fn: Callable | None = None,
                 multi_avg_fn: Callable | None = None, use_buffers: bool = False,
                 is_buffer: Callable[[str, Any], bool] | None = None) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, use_buffers
        self.device = device
        module = jax.tree.map(lambda x: jnp.array(x, copy=True), model)
        self.module = jax.device_put(module, device) if device is not None else module
        self.n_averaged = jnp.zeros((), jnp.int32)
        is_buffer = is_buffer or _default_is_buffer
        paths = jax.tree_util.tree_flatten_with_path(self.module, is_leaf=is_none)[0]
        self._buffer_mask = tuple(leaf is not None and bool(is_buffer(param_name(path), leaf)) for path, leaf in paths)
        self._averager = _averaging.averaged_params(avg_fn=avg_fn, multi_avg_fn=multi_avg_fn)

    def __call__(self, fn: Callable, *args, **kwargs):
        """torch's `forward`: `fn(self.module, *args, **kwargs)`."""
        return fn(self.module, *args, **kwargs)

    def update_parameters(self, model: Any) -> None:
        check_same_structure(self.module, model, "AveragedModel.module", "params")
        if self.device is not None:
            model = jax.device_put(model, self.device)
        self.module, self.n_averaged = _jitted_update(
            (self._averager, self._buffer_mask, bool(self.use_buffers)), self.module, self.n_averaged, model)

    def parameters(self) -> list:
        return [leaf for leaf, buf in zip(jax.tree.leaves(self.module, is_leaf=is_none), self._buffer_mask)
                if leaf is not None and not buf]

    def state_dict(self) -> dict[str, Any]:
        out = {"n_averaged": self.n_averaged}
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.module)[0]:
            out[f"module.{param_name(path)}"] = leaf
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        paths, treedef = jax.tree_util.tree_flatten_with_path(self.module, is_leaf=is_none)
        leaves = []
        for path, leaf in paths:
            if leaf is None:
                leaves.append(None)
                continue
            key = f"module.{param_name(path)}"
            if key not in state_dict:
                raise KeyError(f"missing key {key!r} in the AveragedModel state dict")
            value = state_dict[key]
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else value
            if tuple(jnp.shape(value)) != tuple(leaf.shape):
                raise ValueError(f"{key!r} has shape {tuple(jnp.shape(value))}, the model's is {tuple(leaf.shape)}")
            leaves.append(jnp.array(value, dtype=leaf.dtype, copy=True))
        n = state_dict["n_averaged"]
        n = n.item() if hasattr(n, "item") else n
        self.module, self.n_averaged = treedef.unflatten(leaves), jnp.asarray(int(n), jnp.int32)


def _update_impl(config, module, n_averaged, model):
    averager, buffer_mask, use_buffers = config
    leaves, treedef = jax.tree.flatten(module, is_leaf=is_none)
    current = treedef.flatten_up_to(model)
    averaged_mask = [not (buf and not use_buffers) for buf in buffer_mask]
    pick = lambda xs, keep: [x if k else None for x, k in zip(xs, keep)]
    state = averager.update(pick(current, averaged_mask),
                            _averaging.AveragedParamsState(pick(leaves, averaged_mask), n_averaged))
    out = [a if keep else (None if c is None else jnp.asarray(c).astype(jnp.result_type(l)))
           for a, c, l, keep in zip(state.averaged, current, leaves, averaged_mask)]
    return treedef.unflatten(out), state.n_averaged


_jitted_update = jax.jit(_update_impl, static_argnums=(0,), donate_argnums=(1,))


def update_bn(loader, model, device: Any = None) -> None:
    """torch's `update_bn` for a flax.nnx model (optional import of flax): resets every
    `nnx.BatchNorm`'s running statistics and recomputes them as the plain average over the
    batches of `loader` (torch's `momentum=None`), calling `model(input)` in training mode; each
    batch is an array or a list/tuple whose first element is the input. Each layer's
    `use_running_average` and `momentum` are restored afterwards. Statistics follow flax's
    BatchNorm (its running variance is the biased batch variance; torch's is unbiased).
    """
    from flax import nnx  # optional dependency

    layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
    if not layers:
        return
    saved = [(m.use_running_average, m.momentum) for m in layers]
    for m in layers:
        m.mean[...] = jnp.zeros_like(m.mean[...])
        m.var[...] = jnp.ones_like(m.var[...])
        m.use_running_average = False
    try:
        for k, batch in enumerate(loader, start=1):
            if isinstance(batch, (list, tuple)):
                batch = batch[0]
            if device is not None:
                batch = jax.device_put(batch, device)
            for m in layers:
                m.momentum = (k - 1) / k  # running <- ((k-1) running + batch) / k: the plain average
            model(batch)
    finally:
        for m, (use_running_average, momentum) in zip(layers, saved):
            m.use_running_average, m.momentum = use_running_average, momentum


class SWALR(LRScheduler):
    """Anneals each group's lr to its `swa_lr` over `anneal_epochs` (cos or linear), then holds it.

    torch's recursion: at each step the pre-annealing lr is recovered from `group['lr']`
    (`(lr - alpha_prev * swa_lr) / (1 - alpha_prev)`) and re-interpolated with the new alpha, so a
    hand edit of `group['lr']` is carried along as in torch. The anneal functions and the
    interpolation are `optax_like.schedules.swa`'s (shared with `swa_lr`).
    """

    def __init__(self, optimizer, swa_lr: float, anneal_epochs=10, anneal_strategy: str = "cos",
                 last_epoch=-1) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        for lr, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = lr
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list:
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self.anneal_func(_swa.swa_progress(HOST, step - 1, self.anneal_epochs))
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha) for group in self.optimizer.param_groups]
        alpha = self.anneal_func(_swa.swa_progress(HOST, step, self.anneal_epochs))
        return [_swa.swa_interpolate(group["swa_lr"], lr, alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)]

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        fn = _swa.anneal_fn(anneal_strategy)
        self.anneal_func = lambda t: fn(t, HOST)

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
