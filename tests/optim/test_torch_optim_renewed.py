"""torch's generic optimizer tests (`TestOptimRenewed`, pytorch test/test_optim.py, main branch
as of torch 2.13) translated to the stateful adapter `optax_like.optim`.

Every case runs over torch's own optimizer database (`optim_db` in
torch/testing/_internal/common_optimizers.py): the optimizers the torch method is decorated
with, and the configurations it reads (`optim_inputs_func(device="cpu")`, or
`_get_optim_inputs_including_global_cliquey_kwargs` with the same `skip`), filtered as the torch
method filters them. Cases are (method x optimizer x configuration); a configuration also
carries the torch method's own `@parametrize` values (`num_dim`, `contiguous`, `with_lrsched`,
`is_named_optim*`). The default run keeps the first configuration of each method for every sixth
optimizer of its list (rotating, see `DEFAULT_SHARE`); the rest are marked `slow` (`-m ''` runs
them all). Ids: `<optimizer>-<config index>[-tags]`.
Configurations torch's database itself skips on CPU (`DecorateInfo(unittest.skip(...))`, e.g.
LBFGS's param-group methods, ASGD's zero-grad no-op, SparseAdam's older state dict) are not
generated; torch's `toleranceOverride`s are applied.

Translation rules
-----------------
- Tensors -> jnp arrays (drawn with torch under a fixed seed, so both sides start equal); torch
  Tensor hyperparameters (lr, betas) -> jnp arrays of the same shape and dtype; torch's default
  float32, and float64 (rosenbrock) under a scoped `jax.enable_x64(True)`.
- `optimizer.step(closure)` with a closure that runs `loss.backward()` ->
  `optimizer.step(loss_fn, *batch)` (`loss_fn` defined once at module level: one compilation).
- `closure(); optimizer.step()` (the gradients computed outside the step) ->
  `zero_grad(); backward(grads); step()`, grads from `optax_like.value_and_grad(loss_fn)` (torch's
  `.grad`, complex params included). SparseAdam, whose closures call `.to_sparse()` after
  `backward()`, always takes this path, with the gradients as BCOO (torch's `.to_sparse()`: the
  non-zero entries). LBFGS always takes `step(loss_fn)`.
- `p.grad = g` -> `optimizer.zero_grad(); optimizer.backward(grads)` (None = no gradient).
- A closure that does NOT backward (it only returns a value while `.grad` holds g, or holds
  nothing): other optimizers only evaluate it, so `step()`; LBFGS needs a closure, so
  `step(loss_fn)` with a `loss_fn` whose value is the closure's return (same shape: torch's
  `torch.tensor([1])` is a (1,) array) and whose gradient is the `.grad` torch's LBFGS reads.
- Named params `[(name, p), ...]` -> the same list of `(name, array)` pairs.
- `torch.nn.Sequential(Conv2d(4, 2, 1, stride=2), BatchNorm2d(2))` (train mode) -> the jnp
  function `_conv_bn_loss` over torch's initial weights, params in `named_parameters()` order.
- Arrays given to an optimizer are owned by it (donated to its step, docs/adapter.md): where a
  torch test hands the same tensors to two optimizers, each gets its own copy of the values.

Methods translated (method -> what the translated case checks)
-------------------------------------------------------------
| torch method | checks |
|---|---|
| test_errors | each error input: ours raises (or warns) torch's type and regex (step errors: at construction or step) |
| test_forloop_goes_right_direction | 20 steps (+ the record's schedulers) lower the loss (raise it with maximize) |
| test_param_group_with_lrscheduler_goes_right_direction | two groups, the second with its own lr, + schedulers: loss goes down |
| test_tensor_lr | a 0/1/2-d array lr gives the float lr's trajectory (or torch's "lr as a Tensor is not supported" ValueError) |
| test_rosenbrock_sparse | 1800 steps with uncoalesced sparse (BCOO) gradients == dense gradients (5e-6); distance to the optimum shrinks |
| test_complex | complex params step as their `view_as_real` twins (every step, final params) |
| test_complex_2d | a complex (2,) param steps as its real and imaginary parts given as two params, via `step(loss_fn)` |
| test_adamw_serialization | `decoupled_weight_decay` across Adam/AdamW state dicts |
| test_param_groups_weight_decay | a group with weight decay and one without: loss goes the right direction |
| test_param_groups_lr | the group's own lr is used, the outer lr=1e-28 leaves the other group unchanged |
| test_step_is_noop_when_params_have_no_grad | step without gradients succeeds and leaves params unchanged |
| test_step_is_noop_for_zero_grads | zero (or empty sparse) gradients leave params unchanged |
| test_grads_are_never_inplaced_into | the gradient arrays handed to `backward` survive 5 steps unchanged (not donated) |
| test_optimizer_can_be_printed | `repr` works |
| test_state_dict_deterministic | load into a fresh optimizer: same params for 10 steps, equal state dicts, repeated groups (#36831) |
| test_can_load_older_state_dict | a state dict without the record's newer flags loads and steps |
| test_can_load_from_to_named_state_dict | named <-> unnamed loads step and keep `param_names` |
| test_save_load_equality_with_weights_only | torch.save then torch.load (and weights_only=True) give the state dict back; so does the no-pickle `optax_like.checkpoint` file |
| test_load_nontensor_step | a state dict whose `step`s are Python numbers loads and steps |
| test_state_dict_pre_hook / _post_hook / _pre_post_hook | state_dict hooks run and may edit `optimizer.state` / the dict |
| test_load_state_dict_pre_hook_and_prepend / _post_hook / _pre_post_hook | load hooks: order, `prepend`, returned dicts, post hooks writing `optimizer.state` |
| test_step_pre_hook / test_step_post_hook / test_step_all_hooks | step hooks fire, in torch's order with the global ones, and are removed by their handles |
| test_deepcopy_copies_all_public_attrs | `deepcopy` keeps the public attributes |
| test_second_order_optims_return_consistent_types | LBFGS's step returns one type whatever `tolerance_grad` |
| test_non_empty_state | after one step every state entry is non-empty, with torch's params and keys (torch run live) |
| test_step_iteration | LBFGS(max_iter=1, max_eval=5, strong_wolfe) evaluates the loss 6 times (our `func_evals`) |

Methods not translated (reason)
-------------------------------
- test_optim_infos_do_not_specify_global_cliquey_kwargs: checks torch's database, not an optimizer.
- test_forloop_goes_right_direction_multigpu, test_mixed_device_dtype: CUDA, two GPUs.
- test_foreach_matches_forloop: torch's foreach kernels vs its for-loop; ours accept `foreach` and
  ignore it (one XLA program). Ours vs torch's numbers: tests/parity/test_optim_db.py.
- test_set_default_dtype_works_with_foreach: accelerator only; torch's default dtype and foreach.
- test_foreach_large_tensor, test_peak_memory_foreach: CUDA memory (2**32 elements, allocator peaks).
- test_fused_matches_forloop: fused kernels vs for-loop (fused is accepted and ignored here).
- test_fused_error_on_params_on_meta: meta-device params of a fused optimizer (no meta arrays in JAX).
- test_fused_large_tensor: 64 GB fused kernel test.
- test_fused_does_not_step_if_foundinf: accelerator only (the fused kernel's grad_scale/found_inf).
- test_cpu_load_state_dict: skips itself on CPU (fused/capturable state moved to CPU).
- test_state_dict_cross_device: accelerator only.
- test_fused_cpu_matches_cuda, test_defaults_changed_to_foreach: CUDA (kernel dispatch).
- test_fused_mixed_precision_state_init, _hook_skips_existing_state, _numerics: CUDA fused Adam(W).
"""

from __future__ import annotations

import copy
import functools
import math
import re
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import sparse as jsparse

import optax_like as ol
from optax_like import checkpoint, optim
from optax_like.optim import lr_scheduler as ours_ls

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers", reason="needs expecttest (the `test` extra)"
)
from torch.testing._internal.common_utils import TestCase  # noqa: E402  (after the importorskip)

_get_inputs = common_optimizers._get_optim_inputs_including_global_cliquey_kwargs
DB = {info.optim_cls.__name__: info for info in common_optimizers.optim_db}
_TC = TestCase()  # torch's assertEqual (its per-dtype default tolerances), as the torch tests use it

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# =============================================================================== helpers
def _j(t):
    """A torch tensor -> a jnp array of the same values, shape and dtype."""
    return jnp.asarray(t.detach().cpu().resolve_conj().numpy())


def _ours_value(v):
    if isinstance(v, torch.Tensor):
        return _j(v)
    if isinstance(v, tuple):
        return tuple(_ours_value(x) for x in v)
    if isinstance(v, list):
        return [_ours_value(x) for x in v]
    return v


def _ok(kwargs):
    """torch's kwargs -> ours (Tensor hyperparameters become arrays of the same shape)."""
    return {k: _ours_value(v) for k, v in kwargs.items()}


def _to_torch(x):
    """Our values -> torch's, for torch's assertEqual (arrays -> tensors, containers mapped)."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic)) and not isinstance(x, (bool, np.bool_)):
        a = np.array(x)
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        return torch.from_numpy(a)
    if isinstance(x, dict):
        return {k: _to_torch(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_torch(v) for v in x)
    return x


def assert_equal(actual, expected, **tolerance):
    """torch's `self.assertEqual(actual, expected)` on our values (dtype exact, tolerances per dtype)."""
    _TC.assertEqual(_to_torch(actual), _to_torch(expected), **tolerance)


def _cls(name):
    return getattr(optim, name)


def _tolerance(name, method, dtype):
    """torch's `toleranceOverride` for (optimizer, method, dtype) on CPU, as assertEqual kwargs."""
    for d in DB[name].decorators:
        if getattr(d, "cls_name", None) != "TestOptimRenewed" or d.test_name != method:
            continue
        if d.device_type not in (None, "cpu") or not _active(d, dtype):
            continue
        for dec in d.decorators:
            overrides = getattr(dec, "d", None)
            if isinstance(overrides, dict) and dtype in overrides:
                return {"atol": overrides[dtype].atol, "rtol": overrides[dtype].rtol}
    return {}


def _active(decorate_info, dtype):
    active = decorate_info.active_if
    if callable(active):
        return bool(active({"device": "cpu", "dtype": dtype}))
    return bool(active)


def _torch_skips(name, method):
    """The reason torch's database skips (optimizer, method) on CPU, else None."""
    for d in DB[name].decorators:
        if getattr(d, "cls_name", None) != "TestOptimRenewed" or d.test_name != method:
            continue
        if d.device_type not in (None, "cpu") or not _active(d, torch.float32):
            continue
        for dec in d.decorators:
            if getattr(dec, "__qualname__", "").startswith("skip."):
                return "skipped by torch's optim_db"
    return None


def _ours_scheduler(factory):
    """A scheduler record of optim_db (`lambda opt: StepLR(opt, ...)`) building ours instead."""
    glb = dict(factory.__globals__)
    glb.update({n: getattr(ours_ls, n) for n in factory.__code__.co_names if hasattr(ours_ls, n)})
    return types.FunctionType(factory.__code__, glb, factory.__name__, factory.__defaults__, factory.__closure__)


def _step_schedulers(schedulers, loss):
    for scheduler in schedulers:
        if isinstance(scheduler, ours_ls.ReduceLROnPlateau):
            scheduler.step(loss)
        else:
            scheduler.step()


def _bcoo(g):
    """torch's `grad.to_sparse()` (a full sparse COO of the non-zero entries) as BCOO, built on
    the host (`BCOO.fromdense` compiles a dozen small programs per shape)."""
    a = np.asarray(g)
    idx = np.argwhere(a != 0).astype(np.int32)
    return jsparse.BCOO((jnp.asarray(a[tuple(idx.T)]), jnp.asarray(idx)), shape=a.shape)


def _to_sparse(grads):
    return jax.tree.map(_bcoo, grads)


@functools.lru_cache(maxsize=None)
def _value_and_grad(loss_fn):
    """The loss and torch's `.grad` (optax_like.value_and_grad: torch's convention for complex
    params), jitted once per loss function."""
    return jax.jit(ol.value_and_grad(loss_fn))


def _backward_step(opt, info, loss_fn, *batch):
    """torch's `loss = closure(); optimizer.step()`, the closure running `zero_grad()` and
    `loss.backward()` (SparseAdam: then `.to_sparse()`): `zero_grad(); backward(grads); step()`.
    LBFGS's step needs the closure: `step(loss_fn)`. Returns the loss at the params before the
    step, as the closure does."""
    if info.step_requires_closure:
        return opt.step(loss_fn, *batch)
    loss, grads = _value_and_grad(loss_fn)(opt.params, *batch)
    opt.zero_grad()
    opt.backward(_maybe_sparse(info, grads))
    opt.step()
    return loss


def _closure_step(opt, info, loss_fn, *batch):
    """torch's `loss = optimizer.step(closure)` for the same closure: `step(loss_fn)`. SparseAdam's
    closure turns the gradients sparse after `backward()`, which a differentiated loss_fn cannot
    express: there, `_backward_step`."""
    if info.only_supports_sparse_grads:
        return _backward_step(opt, info, loss_fn, *batch)
    return opt.step(loss_fn, *batch)


def _value_grads_loss(params, value, grads):
    """LBFGS's loss_fn for a torch closure that does not backward: its value is the closure's
    return (same shape and type) and its gradient the `.grad` torch's LBFGS then reads (`grads`,
    in the params' structure; None: no gradient). Module-level: one compilation per shape."""
    extra = [jnp.sum(g * (p - jax.lax.stop_gradient(p))) for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params))]
    return value + sum(extra) if extra else value


def _no_backward_step(opt, info, closure_value, grads=None):
    """torch's `opt.step(closure)` where the closure only returns `closure_value`: the other
    optimizers only evaluate it (they use the pending gradients); LBFGS differentiates it."""
    if info.step_requires_closure:
        value = _j(closure_value) if isinstance(closure_value, torch.Tensor) else closure_value
        return opt.step(_value_grads_loss, value, grads)
    return opt.step()


def _maybe_sparse(info, grads):
    return _to_sparse(grads) if info.only_supports_sparse_grads else grads


# ---------------------------------------------------------------------- losses (defined once)
def _wb_loss(params, x):
    """torch: `(weight.mv(input) + bias).pow(2).sum()`."""
    w, b = params
    return jnp.sum((w @ x + b) ** 2)


def _w_loss(params, x):
    """Muon's variant (2-D params only): `weight.mv(input).pow(2).sum()`."""
    (w,) = params
    return jnp.sum((w @ x) ** 2)


def _two_groups_loss(params, x):
    """`(weight.mv(input) + weight2.mv(input)).pow(2).sum()` over groups [[weight], [weight2]]."""
    (w,), (w2,) = params
    return jnp.sum((w @ x + w2 @ x) ** 2)


def _lr_groups_loss(params, x):
    """test_param_groups_lr: groups [[weight, bias], [irrelevant]] (Muon: [[weight], ...])."""
    return _wb_loss(params[0], x) if len(params[0]) == 2 else _w_loss(params[0], x)


def _conv_bn_loss(params, x):
    """`Sequential(Conv2d(4, 2, 1, stride=2), BatchNorm2d(2, eps=1e-5))(x).sum()`, train mode."""
    w, b, gamma, beta = params
    y = jnp.einsum("oi,nihw->nohw", w[:, :, 0, 0], x[:, :, ::2, ::2]) + b[None, :, None, None]
    mean = y.mean(axis=(0, 2, 3), keepdims=True)
    var = y.var(axis=(0, 2, 3), keepdims=True)
    y = (y - mean) / jnp.sqrt(var + 1e-5) * gamma[None, :, None, None] + beta[None, :, None, None]
    return jnp.sum(y)


def _linear_sum_loss(params, x):
    """Muon's model: `Linear(10, 4, bias=False)(x).sum()`."""
    (w,) = params
    return jnp.sum(w @ x)


def _rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def _drosenbrock(p):
    x, y = p[0], p[1]
    return np.stack((-400 * x * (y - x ** 2) - 2 * (1 - x), 200 * (y - x ** 2))).astype(p.dtype)


def _model_and_input(name):
    """torch's `_get_model_and_input_tensor` (seed 1): our params as named pairs in
    `named_parameters()` order, the input, and the loss."""
    torch.manual_seed(1)
    if name == "Muon":
        model = torch.nn.Linear(10, 4, bias=False)
        x = torch.rand(10)
        loss = _linear_sum_loss
    else:
        model = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.BatchNorm2d(2, eps=1e-05, momentum=0.1))
        x = torch.rand(1, 4, 16, 16)
        loss = _conv_bn_loss
    return [(n, _j(p)) for n, p in model.named_parameters()], _j(x), loss


def _copies(tree):
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def _direction(maximize, final, initial):
    if maximize:
        assert final > initial, f"maximize: loss {final} did not rise above {initial}"
    else:
        assert final < initial, f"loss {final} did not fall below {initial}"


# ====================================================================== configurations
def _inputs(name, source, dtype=torch.float32):
    """Fresh OptimizerInputs (torch's tests edit their kwargs): 'plain' is `optim_inputs_func`,
    otherwise the cliquey variants with torch's `skip`."""
    info = DB[name]
    if source == "plain":
        return info.optim_inputs_func(device="cpu")
    skip = {"all": (), "no_diff": ("differentiable",), "no_diff_fused": ("differentiable", "fused")}[source]
    return _get_inputs("cpu", dtype, info, skip=skip)


def _rosenbrock_inputs(name):
    """test_rosenbrock_sparse's `supported_inputs` and schedulers (its own dedup of the kwargs)."""
    info = DB[name]
    all_inputs = _get_inputs("cpu", torch.float64, info, skip=("differentiable", "fused"))
    kwarg_updates, schedulers = info.metadata_for_sparse
    if not kwarg_updates:
        return all_inputs, schedulers
    supported, seen = [], set()
    for i in all_inputs:
        for k in kwarg_updates:
            i.kwargs.pop(k, None)
        hashable = tuple(sorted(i.kwargs.items()))
        if len(i.kwargs) > 0 and hashable not in seen:
            supported.append(i)
            seen.add(hashable)
            if "lr" in kwarg_updates:
                i.kwargs["lr"] = kwarg_updates["lr"]
    return supported, schedulers


ALL = list(DB)
COMPLEX = [n for n in ALL if DB[n].supports_complex]
SPARSE = [n for n in ALL if DB[n].supports_sparse or DB[n].only_supports_sparse_grads]
CLOSURE = [n for n in ALL if DB[n].step_requires_closure]
NAMED = [(True, True), (True, False), (False, True), (False, False)]  # torch's parametrize order


def _plain(source):
    return lambda name: [dict(i=i) for i in range(len(_inputs(name, source)))]


def _with(source, key, values):
    return lambda name: [dict(i=i, **{key: v}) for i in range(len(_inputs(name, source))) for v in values]


def _goes_right_direction_configs(name):
    n = len(_inputs(name, "plain"))
    out = [dict(i=i, contiguous=c) for c in (True, False) for i in range(n)]
    out += [dict(i=i, contiguous=c, sched=s) for s in range(len(DB[name].scheduler_inputs))
            for c in (True, False) for i in range(n)]
    return out


def _rosenbrock_configs(name):
    inputs, schedulers = _rosenbrock_inputs(name)
    return [dict(i=i, lrsched=s) for s in (False, True) if not s or schedulers for i in range(len(inputs))]


def _zero_grads_configs(name):
    return [dict(i=i) for i, inp in enumerate(_inputs(name, "all")) if inp.kwargs.get("weight_decay", 0) == 0]


# method -> (optimizers, configurations of one optimizer)
METHODS = {
    "test_errors": (ALL, lambda n: [dict(i=i) for i in range(len(
        DB[n].optim_error_inputs_func(device="cpu", dtype=torch.float32)))]),
    "test_forloop_goes_right_direction": (ALL, _goes_right_direction_configs),
    "test_param_group_with_lrscheduler_goes_right_direction": (
        ALL, lambda n: [dict(sched=s) for s in range(len(DB[n].scheduler_inputs))]),
    "test_tensor_lr": (ALL, _with("no_diff", "num_dim", (0, 1, 2))),
    "test_rosenbrock_sparse": (SPARSE, _rosenbrock_configs),
    "test_complex": (COMPLEX, lambda n: [dict(i=i) for i in range(len(_inputs(n, "no_diff_fused", torch.complex64)))]),
    "test_complex_2d": (COMPLEX, lambda n: [dict(i=i) for i in range(len(_inputs(n, "no_diff_fused", torch.complex64)))]),
    "test_adamw_serialization": (["AdamW"], lambda n: [dict()]),
    "test_param_groups_weight_decay": (ALL, _plain("no_diff")),
    "test_param_groups_lr": (ALL, _plain("no_diff")),
    "test_step_is_noop_when_params_have_no_grad": (ALL, _plain("all")),
    "test_step_is_noop_for_zero_grads": (ALL, _zero_grads_configs),
    "test_grads_are_never_inplaced_into": (ALL, _plain("all")),
    "test_optimizer_can_be_printed": (ALL, _plain("all")),
    "test_state_dict_deterministic": (ALL, _with("no_diff", "named", NAMED)),
    "test_can_load_older_state_dict": (ALL, _plain("no_diff")),
    "test_can_load_from_to_named_state_dict": (
        [n for n in ALL if not DB[n].only_supports_sparse_grads], _with("no_diff", "named", NAMED)),
    "test_save_load_equality_with_weights_only": (ALL, _with("no_diff", "named", (True, False))),
    "test_load_nontensor_step": (ALL, _plain("no_diff")),
    "test_state_dict_pre_hook": (ALL, _plain("all")),
    "test_state_dict_post_hook": (ALL, _plain("all")),
    "test_state_dict_pre_post_hook": (ALL, _plain("all")),
    "test_load_state_dict_pre_hook_and_prepend": (ALL, _plain("all")),
    "test_load_state_dict_post_hook": (ALL, _plain("all")),
    "test_load_state_dict_pre_post_hook": (ALL, _plain("all")),
    "test_step_post_hook": (ALL, _plain("all")),
    "test_step_pre_hook": (ALL, _plain("all")),
    "test_step_all_hooks": (ALL, _plain("all")),
    "test_deepcopy_copies_all_public_attrs": (ALL, _plain("no_diff")),
    "test_second_order_optims_return_consistent_types": (CLOSURE, _plain("plain")),
    "test_non_empty_state": (ALL, _plain("plain")),
    "test_step_iteration": (["LBFGS"], lambda n: [dict()]),
}


def _tag(cfg):
    tags = []
    for k, v in cfg.items():
        if k == "i":
            continue
        if k == "named":
            tags.append(f"named={int(v[0])}{int(v[1])}" if isinstance(v, tuple) else f"named={int(v)}")
        elif k == "contiguous":
            tags.append("contiguous" if v else "noncontiguous")
        else:
            tags.append(f"{k}={int(v) if isinstance(v, bool) else v}")
    return "".join("-" + t for t in tags)


CONFIGS = {}


# The default run: each method on every DEFAULT_SHARE-th optimizer of its list (rotating with the
# method, so every optimizer meets a share of the methods), first configuration only; the full
# matrix (every optimizer, every configuration) is `slow`. Keeps CI's default run within budget
# (all 5,352 cases: about 5 minutes on 2 cores).
DEFAULT_SHARE = 6


def _cases(method):
    optimizers, configs_of = METHODS[method]
    params = []
    rotation = sum(map(ord, method)) % DEFAULT_SHARE
    for position, name in enumerate(optimizers):
        if _torch_skips(name, method):
            continue
        CONFIGS[method, name] = configs_of(name)
        for idx, cfg in enumerate(CONFIGS[method, name]):
            default = idx == 0 and (position + rotation) % DEFAULT_SHARE == 0
            marks = [] if default else [pytest.mark.slow]
            params.append(pytest.param(name, idx, id=f"{name}-{idx}{_tag(cfg)}", marks=marks))
    return params


def _cfg(method, name, idx):
    return CONFIGS[method, name][idx]


def cases(method):
    return pytest.mark.parametrize("name, idx", _cases(method))


def test_every_translated_method_has_cases():
    """Each torch method in the table runs for at least one optimizer (a guard against a
    database change that empties a method's cases)."""
    for method in METHODS:
        assert any(m == method for m, _ in CONFIGS), method


# ====================================================================== the methods
# ---------------------------------------------------------------------------- test_errors
def _ours_error_input(x, seen):
    """torch's error-input params/kwargs -> ours (one jnp array per torch object: a repeated
    Parameter stays one array; a sparse tensor -> BCOO)."""
    if isinstance(x, torch.Tensor):
        if id(x) not in seen:
            if x.is_sparse:
                x = x.coalesce()
                seen[id(x)] = jsparse.BCOO((_j(x.values()), _j(x.indices().T).astype(jnp.int32)), shape=tuple(x.shape))
            else:
                seen[id(x)] = _j(x)
        return seen[id(x)]
    if isinstance(x, (list, tuple)):
        return type(x)(_ours_error_input(v, seen) for v in x)
    if isinstance(x, dict):
        return {k: _ours_error_input(v, seen) for k, v in x.items()}
    return x


def _tensor_grads(x):
    """The `.grad`s of the params in torch's error input, in the params' structure."""
    if isinstance(x, torch.Tensor):
        return None if x.grad is None else _j(x.grad)
    if isinstance(x, (list, tuple)):
        return [_tensor_grads(v) for v in x]
    if isinstance(x, dict):
        return _tensor_grads(x["params"])
    return None


@cases("test_errors")
def test_errors(name, idx):
    error_input = DB[name].optim_error_inputs_func(device="cpu", dtype=torch.float32)[idx]
    inp = error_input.optimizer_error_input
    seen = {}
    params, kwargs = _ours_error_input(inp.params, seen), _ours_error_input(inp.kwargs, seen)
    cls = _cls(name)
    step = error_input.error_on == common_optimizers.OptimizerErrorEnum.STEP_ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = cls(params, **kwargs)
            if step:  # torch's step uses the .grad the record's params carry
                opt.backward(_tensor_grads(inp.params))
                opt.step()
            error = None
        except Exception as e:  # noqa: BLE001 - the exception is the result under test
            error = e
    if issubclass(error_input.error_type, Warning):
        assert error is None, f"raised {error!r} where torch warns"
        matching = [w for w in caught if issubclass(w.category, error_input.error_type)
                    and re.search(error_input.error_regex, str(w.message))]
        assert matching, f"no {error_input.error_type.__name__} matching {error_input.error_regex!r}: {caught}"
    else:
        assert isinstance(error, error_input.error_type), f"expected {error_input.error_type.__name__}, got {error!r}"
        assert re.search(error_input.error_regex, str(error)), f"{str(error)!r} !~ {error_input.error_regex!r}"


# ------------------------------------------------------------ test_forloop_goes_right_direction
@cases("test_forloop_goes_right_direction")
def test_forloop_goes_right_direction(name, idx):
    cfg, info = _cfg("test_forloop_goes_right_direction", name, idx), DB[name]
    inp = _inputs(name, "plain")[cfg["i"]]
    if "foreach" in info.supported_impls:
        inp.kwargs["foreach"] = False  # force forloop (ignored here)
    torch.manual_seed(0)
    if cfg["contiguous"]:
        weight, bias = torch.randn((10, 5)), torch.randn(10)
    else:  # values of a strided view (a jnp array is always contiguous)
        weight, bias = torch.randn((10, 5, 2))[..., 0], torch.randn((10, 2))[..., 0]
    x = _j(torch.randn(5))
    muon = name == "Muon"
    params, loss_fn = ([_j(weight)], _w_loss) if muon else ([_j(weight), _j(bias)], _wb_loss)
    opt = _cls(name)(params, **_ok(inp.kwargs))
    schedulers = [_ours_scheduler(s)(opt) for s in info.scheduler_inputs[cfg["sched"]]] if "sched" in cfg else []
    initial = float(loss_fn(opt.params, x))
    for _ in range(20):
        loss = _backward_step(opt, info, loss_fn, x)
        _step_schedulers(schedulers, loss)
    _direction(inp.kwargs.get("maximize", False), float(loss_fn(opt.params, x)), initial)


@cases("test_param_group_with_lrscheduler_goes_right_direction")
def test_param_group_with_lrscheduler_goes_right_direction(name, idx):
    cfg, info = _cfg("test_param_group_with_lrscheduler_goes_right_direction", name, idx), DB[name]
    torch.manual_seed(0)
    weight, weight2, x = _j(torch.randn((10, 5))), _j(torch.randn((10, 5))), _j(torch.randn(5))
    opt = _cls(name)([{"params": [weight]}, {"params": [weight2], "lr": 0.01}])
    schedulers = [_ours_scheduler(s)(opt) for s in info.scheduler_inputs[cfg["sched"]]]
    initial = float(_two_groups_loss(opt.params, x))
    for _ in range(20):
        loss = _closure_step(opt, info, _two_groups_loss, x)
        _step_schedulers(schedulers, loss)
    _direction(False, float(_two_groups_loss(opt.params, x)), initial)


# ---------------------------------------------------------------------------- test_tensor_lr
@cases("test_tensor_lr")
def test_tensor_lr(name, idx):
    cfg, info = _cfg("test_tensor_lr", name, idx), DB[name]
    kwargs = _inputs(name, "no_diff")[cfg["i"]].kwargs
    torch.manual_seed(0)
    weight, bias, x = torch.randn((10, 5)), torch.randn(10), _j(torch.randn(5))
    muon = name == "Muon"
    loss_fn = _w_loss if muon else _wb_loss
    kwargs.pop("lr", None)
    kwargs["lr"] = 1.0 if info.step_requires_closure else 1e-3
    params = [_j(weight)] if muon else [_j(weight), _j(bias)]
    optimizer_r = _cls(name)(params, **_ok(kwargs))
    try:
        kwargs["lr"] = torch.tensor(kwargs["lr"]).reshape([1] * cfg["num_dim"])
        optimizer = _cls(name)(_copies(params), **_ok(kwargs))
    except ValueError as e:
        assert re.search(".*lr as a Tensor is not supported.*", str(e)), f"ValueError {str(e)!r}"
        return
    for _ in range(5):
        _backward_step(optimizer_r, info, loss_fn, x)
        _backward_step(optimizer, info, loss_fn, x)
        assert_equal(optimizer.params, optimizer_r.params)


# -------------------------------------------------------------------- test_rosenbrock_sparse
def _rosenbrock_grads(params, sparse, w):
    """test_rosenbrock_sparse's `get_grad` for each param: only the x (w=1) or y gradient,
    sparse as an uncoalesced COO (the same index twice) or dense."""
    out = []
    for p in params:
        p = np.asarray(p)
        grad = _drosenbrock(p)
        if sparse:
            if w:
                idx, v = [[0, 0]], [grad[0] / 4.0, grad[0] - grad[0] / 4.0]
            else:
                idx, v = [[1, 1]], [grad[1] - grad[1] / 4.0, grad[1] / 4.0]
            idx = jnp.asarray(np.array(idx, np.int32).T)
            out.append(jsparse.BCOO((jnp.asarray(np.array(v, p.dtype)), idx), shape=(2,)))
        else:
            out.append(jnp.asarray(np.array([grad[0], 0] if w else [0, grad[1]], p.dtype)))
    return out


def _rosenbrock_step(opt, sparse, w):
    opt.zero_grad()
    opt.backward(_rosenbrock_grads(opt.params, sparse, w))
    opt.step()


@cases("test_rosenbrock_sparse")
def test_rosenbrock_sparse(name, idx):
    cfg, info = _cfg("test_rosenbrock_sparse", name, idx), DB[name]
    inputs, scheduler_records = _rosenbrock_inputs(name)
    kwargs = inputs[cfg["i"]].kwargs
    records = scheduler_records if cfg["lrsched"] else []
    with jax.enable_x64(True):
        multi_tensor = kwargs.get("foreach", False)
        params_t = [np.array([1.5, 1.5], np.float32)]  # torch.tensor([1.5, 1.5]): float32
        if multi_tensor:
            params_t.append(np.array([1.5, 1.5], np.float64))
        opt = _cls(name)([jnp.asarray(p) for p in params_t], **_ok(kwargs))
        schedulers = [_ours_scheduler(s)(opt) for s in records]
        dense = not info.only_supports_sparse_grads
        if dense:
            opt_c = _cls(name)([jnp.asarray(p) for p in params_t], **_ok(kwargs))
            schedulers_c = [_ours_scheduler(s)(opt_c) for s in records]
        solution = np.array([1.0, 1.0])
        initial_dist = sum(np.linalg.norm(p - solution) for p in params_t)
        for i in range(1800):
            w = i % 2  # cyclic coordinate descent
            _rosenbrock_step(opt, True, w)
            _step_schedulers(schedulers, float(_rosenbrock(np.asarray(opt.params[0]))))
            if dense:
                _rosenbrock_step(opt_c, False, w)
                _step_schedulers(schedulers_c, float(_rosenbrock(np.asarray(opt_c.params[0]))))
                assert_equal(opt.params, opt_c.params, atol=5e-6, rtol=5e-6)
        final = [np.asarray(p) for p in opt.params]
        if not kwargs.get("maximize", False):
            assert sum(np.linalg.norm(p - solution) for p in final) <= initial_dist
        else:
            assert sum(_rosenbrock(p) for p in final) >= sum(_rosenbrock(p) for p in params_t)


# ---------------------------------------------------------------------------- test_complex
def _complex_lbfgs_losses(complex_params):
    """LBFGS calls its closure inside the step (here: inside one jitted call), so torch's closure
    of fresh random gradients and losses has no pure-function form. The translation keeps the
    property (a complex param steps as its view_as_real twin) with a fixed loss, quadratic plus
    linear, `sum(c r^2 + G r)` over the twin's (re, im) pairs `r`; the complex run evaluates the
    same expression on `view_as_real(z)`, so both losses are equal to the bit, as torch's
    closures return the same loss (torch's gradient of it for z is G + 2 c z)."""
    torch.manual_seed(1)
    cs = [torch.rand(p.shape) + 0.5 for p in complex_params]
    gs = [torch.randn(p.shape, dtype=p.dtype) for p in complex_params]
    c_r = [_j(c[..., None].expand(*c.shape, 2)) if p.is_complex() else _j(c) for c, p in zip(cs, complex_params)]
    g_r = [_j(torch.view_as_real(g)) if g.is_complex() else _j(g) for g in gs]

    def real_loss(params):
        return sum(jnp.sum(c * r ** 2 + g * r) for c, g, r in zip(c_r, g_r, params))

    def complex_loss(params):
        return real_loss([jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1) if jnp.iscomplexobj(z) else z
                          for z in params])

    return complex_loss, real_loss


def _as_real(a):
    a = np.asarray(a)
    return np.stack([a.real, a.imag], axis=-1) if np.iscomplexobj(a) else a


@cases("test_complex")
def test_complex(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "no_diff_fused", torch.complex64)[_cfg("test_complex", name, idx)["i"]].kwargs
    torch.manual_seed(0)
    complex_params = [torch.randn(10, 5, dtype=torch.complex64), torch.randn(10, dtype=torch.complex64),
                      torch.randn(10, 5, dtype=torch.float32)]  # the last one real: mixed
    real_params = [torch.view_as_real(p) if p.is_complex() else p for p in complex_params]
    complex_opt = _cls(name)([_j(p) for p in complex_params], **_ok(kwargs))
    real_opt = _cls(name)([_j(p) for p in real_params], **_ok(kwargs))
    if info.step_requires_closure:
        complex_loss, real_loss = _complex_lbfgs_losses(complex_params)
    complex_steps, real_steps = [], []
    for _ in range(3):
        real_steps.append([np.asarray(p) for p in real_opt.params])
        complex_steps.append([_as_real(p) for p in complex_opt.params])
        if info.step_requires_closure:
            real_opt.step(real_loss)
            complex_opt.step(complex_loss)
        else:
            grads = [torch.randn_like(p) for p in real_params]
            real_opt.zero_grad()
            real_opt.backward([_j(g) for g in grads])
            complex_opt.zero_grad()
            complex_opt.backward([_j(torch.view_as_complex(g)) if p.is_complex() else _j(g)
                                  for g, p in zip(grads, complex_params)])
            real_opt.step()
            complex_opt.step()
    assert_equal([_as_real(p) for p in complex_opt.params], real_opt.params)
    assert_equal(complex_steps, real_steps)


def _complex_2d_loss(params):
    """`rosenbrock(a1).abs()` for one complex (2,) param."""
    (a,) = params
    return jnp.abs(_rosenbrock(a))


def _real_imag_2d_loss(params):
    """`rosenbrock(torch.complex(a1_real, a1_imag)).abs()`."""
    re_, im = params
    return jnp.abs(_rosenbrock(jax.lax.complex(re_, im)))


@cases("test_complex_2d")
def test_complex_2d(name, idx):
    """torch's TensorTracker checks the split run against the complex one at every closure call
    and then copies the complex values into it (`pop_check_set`), so rounding never accumulates;
    here the check-and-copy happens after each step. LBFGS evaluates its closure inside the step
    (here: inside one jitted call), where no copy can be made; in complex64 its two runs then
    drift apart chaotically (torch's own: 9e-5 after one step, above the 5e-5 tolerance torch
    grants LBFGS here), so LBFGS's case runs in complex128 (scoped x64; torch's own drift: 7e-7
    by the third step) with that tolerance."""
    info = DB[name]
    dtype = torch.complex128 if info.step_requires_closure else torch.complex64
    kwargs = _inputs(name, "no_diff_fused", torch.complex64)[_cfg("test_complex_2d", name, idx)["i"]].kwargs
    tolerance = _tolerance(name, "test_complex_2d", torch.complex64)
    with jax.enable_x64(info.step_requires_closure):
        torch.manual_seed(2024)
        a1 = torch.randn(2, dtype=dtype)
        optim1 = _cls(name)([_j(a1)], **_ok(kwargs))
        optim2 = _cls(name)([_j(a1.real), _j(a1.imag)], **_ok(kwargs))
        for _ in range(3):
            loss1 = optim1.step(_complex_2d_loss)  # closure1(); optim1.step() (LBFGS: step(closure1))
            loss2 = optim2.step(_real_imag_2d_loss)
            assert_equal(loss2, loss1, **tolerance)
            (a,), (re_, im) = optim1.params, optim2.params
            assert_equal(re_, jnp.real(a), **tolerance)
            assert_equal(im, jnp.imag(a), **tolerance)
            optim2.params = [jnp.real(a), jnp.imag(a)]  # pop_check_set: check, then set


# --------------------------------------------------------------------- test_adamw_serialization
@cases("test_adamw_serialization")
def test_adamw_serialization(name, idx):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 5)
    params = lambda: [_j(p) for p in model.parameters()]  # noqa: E731 - one copy per optimizer
    loaded_dict = optim.AdamW(params()).state_dict()
    # Adam respects the decoupled_weight_decay key
    new_optim = optim.Adam(params())
    new_optim.load_state_dict(loaded_dict)
    assert new_optim.param_groups[0]["decoupled_weight_decay"] is True
    # decoupled_weight_decay is always True for AdamW
    adam_state_dict = optim.Adam(params()).state_dict()
    assert adam_state_dict["param_groups"][0]["decoupled_weight_decay"] is False
    new_optim = optim.AdamW(params())
    new_optim.load_state_dict(adam_state_dict)
    assert new_optim.param_groups[0]["decoupled_weight_decay"] is True, "AdamW loaded Adam's False"
    # an old AdamW state dict (no decoupled_weight_decay key) loads as True
    old_adamw_dict = copy.deepcopy(loaded_dict)
    del old_adamw_dict["param_groups"][0]["decoupled_weight_decay"]
    new_optim = optim.AdamW(params())
    new_optim.load_state_dict(old_adamw_dict)
    assert new_optim.param_groups[0]["decoupled_weight_decay"] is True


# ----------------------------------------------------------------------- param groups
@cases("test_param_groups_weight_decay")
def test_param_groups_weight_decay(name, idx):
    info = DB[name]
    weight_kwargs = _ok(_inputs(name, "no_diff")[_cfg("test_param_groups_weight_decay", name, idx)["i"]].kwargs)
    weight2_kwargs = dict(weight_kwargs, weight_decay=0.0)
    torch.manual_seed(0)
    weight, weight2, x = _j(torch.randn((10, 5))), _j(torch.randn((10, 5))), _j(torch.randn(5))
    opt = _cls(name)([dict(params=[weight], **weight_kwargs), dict(params=[weight2], **weight2_kwargs)])
    initial = float(_two_groups_loss(opt.params, x))
    for _ in range(20):
        loss = _backward_step(opt, info, _two_groups_loss, x)
    _direction(weight_kwargs.get("maximize", False), float(loss), initial)


@cases("test_param_groups_lr")
def test_param_groups_lr(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "no_diff")[_cfg("test_param_groups_lr", name, idx)["i"]].kwargs
    if "lr" not in kwargs or kwargs["lr"] == 0:  # the group kwargs need a lr > 0
        kwargs["lr"] = 1e-3
    outer_kwargs = {"lr": 1e-28}
    if name == "Rprop":
        outer_kwargs["step_sizes"] = (0, 50)  # allow a min step size of 0
    torch.manual_seed(0)
    weight, bias = _j(torch.randn((10, 5))), _j(torch.randn(10))
    irrelevant = torch.randn((2, 2))
    x = _j(torch.randn(5))
    params = [weight] if name == "Muon" else [weight, bias]
    opt = _cls(name)([dict(params=params, **_ok(kwargs)), dict(params=[_j(irrelevant)])], **outer_kwargs)
    initial = float(_lr_groups_loss(opt.params, x))
    for _ in range(20):
        opt.zero_grad()
        loss, grads = _value_and_grad(_lr_groups_loss)(opt.params, x)
        grads[1] = [_j(torch.rand_like(irrelevant))]  # irrelevant.grad = torch.rand_like(irrelevant)
        opt.backward(_maybe_sparse(info, grads))
        opt.step()
    _direction(kwargs.get("maximize", False), float(loss), initial)
    assert_equal(opt.params[1][0], _j(irrelevant))  # lr 1e-28: not updated


# --------------------------------------------------------------------------- no-op steps
@cases("test_step_is_noop_when_params_have_no_grad")
def test_step_is_noop_when_params_have_no_grad(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "all")[_cfg("test_step_is_noop_when_params_have_no_grad", name, idx)["i"]].kwargs
    torch.manual_seed(0)
    params = [torch.randn(2, 3) for _ in range(2)]
    opt = _cls(name)([_j(p) for p in params], **_ok(kwargs))
    _no_backward_step(opt, info, torch.tensor([1], dtype=torch.float32))  # closure: torch.tensor([1])
    assert_equal(opt.params, [_j(p) for p in params])


@cases("test_step_is_noop_for_zero_grads")
def test_step_is_noop_for_zero_grads(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "all")[_cfg("test_step_is_noop_for_zero_grads", name, idx)["i"]].kwargs
    torch.manual_seed(0)
    param = torch.randn((5, 1))
    if name in ("AdamW", "Muon"):  # params move regardless of grads through lr: make it small
        kwargs["lr"] = torch.tensor(1e-5) if isinstance(kwargs.get("lr", 1e-5), torch.Tensor) else 1e-5
    opt = _cls(name)([_j(param)], **_ok(kwargs))
    if info.only_supports_sparse_grads:  # an empty sparse grad with a multi-dim v (#82486)
        grads = [jsparse.BCOO((jnp.zeros((0, 1), jnp.float32), jnp.zeros((0, 1), jnp.int32)), shape=(5, 1))]
    else:
        grads = [jnp.zeros((5, 1), jnp.float32)]
    opt.backward(grads)
    _no_backward_step(opt, info, torch.tensor([1], dtype=torch.float32), grads)
    assert_equal(opt.params[0], _j(param), **_tolerance(name, "test_step_is_noop_for_zero_grads", torch.float32))


@cases("test_grads_are_never_inplaced_into")
def test_grads_are_never_inplaced_into(name, idx):
    """JAX arrays are immutable; what can happen to a gradient array handed to `backward` is
    donation to the step (deleted) or replacement: it must stay valid and unchanged."""
    info = DB[name]
    kwargs = _inputs(name, "all")[_cfg("test_grads_are_never_inplaced_into", name, idx)["i"]].kwargs
    torch.manual_seed(0)
    opt = _cls(name)([_j(torch.randn((5, 1)))], **_ok(kwargs))
    if info.only_supports_sparse_grads:
        grad = jsparse.BCOO((jnp.zeros((0, 1), jnp.float32), jnp.zeros((0, 1), jnp.int32)), shape=(5, 1))
        arrays = [grad.data, grad.indices]
    else:
        grad = _j(torch.rand((5, 1)))
        arrays = [grad]
    before = [np.array(a) for a in arrays]
    opt.backward([grad])
    for _ in range(5):
        _no_backward_step(opt, info, torch.tensor([1], dtype=torch.float32), [grad])
        for a, b in zip(arrays, before):
            assert not a.is_deleted(), "the gradient array was donated to the step"
            np.testing.assert_array_equal(np.asarray(a), b)


@cases("test_optimizer_can_be_printed")
def test_optimizer_can_be_printed(name, idx):
    kwargs = _inputs(name, "all")[_cfg("test_optimizer_can_be_printed", name, idx)["i"]].kwargs
    torch.manual_seed(0)
    opt = _cls(name)([_j(torch.randn(2, 3)) for _ in range(2)], **_ok(kwargs))
    assert isinstance(opt.__repr__(), str)


# ------------------------------------------------------------------------------ state dicts
def _named(params, is_named):
    return [(f"name{i}", p) for i, p in enumerate(params)] if is_named else params


def _without_param_names(state_dict):
    new = copy.deepcopy(state_dict)
    for group in new["param_groups"]:
        group.pop("param_names", None)
    return new


@cases("test_state_dict_deterministic")
def test_state_dict_deterministic(name, idx):
    cfg, info = _cfg("test_state_dict_deterministic", name, idx), DB[name]
    kwargs = _ok(_inputs(name, "no_diff")[cfg["i"]].kwargs)
    named0, named1 = cfg["named"]
    torch.manual_seed(0)
    weight, bias, x = _j(torch.randn(2, 3)), _j(torch.randn(2)), _j(torch.randn(3))
    params, loss_fn = ([weight], _w_loss) if name == "Muon" else ([weight, bias], _wb_loss)
    optimizer = _cls(name)(_named(params, named0), **kwargs)
    for _ in range(10):  # prime the optimizer
        _backward_step(optimizer, info, loss_fn, x)
    optimizer_c = _cls(name)(_named(_copies(optimizer.params), named1), **kwargs)
    optimizer_c.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(10):  # run both in parallel
        _backward_step(optimizer, info, loss_fn, x)
        _backward_step(optimizer_c, info, loss_fn, x)
        assert_equal(optimizer_c.params, optimizer.params)
    # deterministic with equal (not identical) params; param names are optional
    assert_equal(_without_param_names(optimizer.state_dict()), _without_param_names(optimizer_c.state_dict()))
    # repeated parameters have identical representation (#36831)
    optimizer_c.param_groups.extend(optimizer_c.param_groups)
    assert_equal(_without_param_names(optimizer.state_dict())["param_groups"][-1],
                 _without_param_names(optimizer_c.state_dict())["param_groups"][-1])


@cases("test_can_load_older_state_dict")
def test_can_load_older_state_dict(name, idx):
    info = DB[name]
    kwargs = _ok(_inputs(name, "no_diff")[_cfg("test_can_load_older_state_dict", name, idx)["i"]].kwargs)
    named_params, x, loss_fn = _model_and_input(name)
    optimizer = _cls(name)([p for _, p in named_params], **kwargs)  # model.parameters()
    for _ in range(3):
        _backward_step(optimizer, info, loss_fn, x)
    old_state_dict = copy.deepcopy(optimizer.state_dict())  # all newer flags deleted
    for group in old_state_dict["param_groups"]:
        for flag in info.not_og_supported_flags:
            group.pop(flag, None)
    optimizer.load_state_dict(old_state_dict)
    _backward_step(optimizer, info, loss_fn, x)  # can still step


@cases("test_can_load_from_to_named_state_dict")
def test_can_load_from_to_named_state_dict(name, idx):
    cfg, info = _cfg("test_can_load_from_to_named_state_dict", name, idx), DB[name]
    kwargs = _ok(_inputs(name, "no_diff")[cfg["i"]].kwargs)
    named0, named1 = cfg["named"]
    named_params, x, loss_fn = _model_and_input(name)
    optimizer = _cls(name)(named_params if named0 else [p for _, p in named_params], **kwargs)
    for _ in range(3):
        _backward_step(optimizer, info, loss_fn, x)
    old_state_dict = copy.deepcopy(optimizer.state_dict())
    current = list(zip([n for n, _ in named_params], _copies(optimizer.params)))  # the model's params now
    optimizer2 = _cls(name)(current if named1 else [p for _, p in current], **kwargs)
    optimizer2.load_state_dict(old_state_dict)
    _backward_step(optimizer2, info, loss_fn, x)  # can still step
    if named0 or named1:  # param_names are kept when either optimizer had them
        assert optimizer2.state_dict()["param_groups"][0].get("param_names") == [n for n, _ in named_params]


@cases("test_save_load_equality_with_weights_only")
def test_save_load_equality_with_weights_only(name, idx, tmp_path):
    """torch.save / torch.load / torch.load(weights_only=True) of `optimizer.state_dict()`, as
    torch's test (docs/adapter.md: torch.save writes torch's format), then the adapter's own
    no-pickle file (`optax_like.checkpoint.save_state_dict`, docs/checkpoint.md)."""
    cfg, info = _cfg("test_save_load_equality_with_weights_only", name, idx), DB[name]
    kwargs = _ok(_inputs(name, "no_diff")[cfg["i"]].kwargs)
    torch.manual_seed(0)
    weight, bias, x = _j(torch.randn(2, 3)), _j(torch.randn(2)), _j(torch.randn(3))
    params, loss_fn = ([weight], _w_loss) if name == "Muon" else ([weight, bias], _wb_loss)
    optimizer = _cls(name)(_named(params, cfg["named"]), **kwargs)
    for _ in range(3):  # prime the optimizer
        _closure_step(optimizer, info, loss_fn, x)
    sd = optimizer.state_dict()
    path = tmp_path / "optimizer.pt"
    torch.save(sd, path)
    assert_equal(torch.load(path), sd)
    assert_equal(torch.load(path, weights_only=True), sd)
    path = tmp_path / "optimizer.safetensors"
    checkpoint.save_state_dict(path, optimizer)
    assert_equal(checkpoint.load_state_dict(path), sd)


def _is_array(x):
    return isinstance(x, (jax.Array, np.ndarray))


@cases("test_load_nontensor_step")
def test_load_nontensor_step(name, idx):
    info = DB[name]
    kwargs = _ok(_inputs(name, "no_diff")[_cfg("test_load_nontensor_step", name, idx)["i"]].kwargs)
    torch.manual_seed(0)
    params = [_j(torch.randn(2, 3)) for _ in range(2)]
    grads = [_j(torch.rand(2, 3)) for _ in range(2)]  # set once, kept for every step
    closure_loss = torch.rand(1)  # needed by LBFGS
    optimizer = _cls(name)(params, **kwargs)
    optimizer.backward(_maybe_sparse(info, grads))
    for _ in range(3):
        _no_backward_step(optimizer, info, closure_loss, grads)
    state_dict = copy.deepcopy(optimizer.state_dict())
    for p_state in state_dict["state"].values():
        if "step" in p_state and _is_array(p_state["step"]):
            p_state["step"] = p_state["step"].item()
    optimizer.load_state_dict(state_dict)
    _no_backward_step(optimizer, info, closure_loss, grads)


# -------------------------------------------------------------------------------- hooks
def _state_dict_pre_hook(optimizer):
    optimizer.state["test"] = 1


def _state_dict_post_hook(optimizer, state_dict):
    if "test" in state_dict["state"]:
        state_dict["state"].pop("test")
        state_dict["ran_state_dict_pre_hook"] = True
    else:
        state_dict["ran_state_dict_pre_hook"] = False
    return state_dict


def _load_state_dict_pre_hook1(optimizer, state_dict):
    state_dict["param_groups"][0]["lr"] = 0.002


def _load_state_dict_pre_hook2(optimizer, state_dict):
    # drastically modify the state dict: a deep copy that must be the one used
    my_state_dict = copy.deepcopy(state_dict)
    my_state_dict["param_groups"][0]["lr"] = 0.003
    return my_state_dict


def _load_state_dict_post_hook(optimizer):
    optimizer.state["ran_load_state_dict_pre_hook2"] = optimizer.param_groups[0]["lr"] == 0.003
    optimizer.state["ran_load_state_dict_post_hook"] = True


def _one_param_optimizer(method, name, idx):
    kwargs = _inputs(name, "all")[_cfg(method, name, idx)["i"]].kwargs
    torch.manual_seed(0)
    return _cls(name)([_j(torch.rand(2, 3))], **_ok(kwargs))


@cases("test_state_dict_pre_hook")
def test_state_dict_pre_hook(name, idx):
    opt = _one_param_optimizer("test_state_dict_pre_hook", name, idx)
    opt.register_state_dict_pre_hook(_state_dict_pre_hook)
    state_dict = opt.state_dict()
    assert state_dict["state"].get("test") == 1, "the pre hook's optimizer.state['test'] = 1 is not in the state dict"


@cases("test_state_dict_post_hook")
def test_state_dict_post_hook(name, idx):
    opt = _one_param_optimizer("test_state_dict_post_hook", name, idx)
    opt.register_state_dict_post_hook(_state_dict_post_hook)
    assert opt.state_dict()["ran_state_dict_pre_hook"] is False


@cases("test_state_dict_pre_post_hook")
def test_state_dict_pre_post_hook(name, idx):
    opt = _one_param_optimizer("test_state_dict_pre_post_hook", name, idx)
    opt.register_state_dict_pre_hook(_state_dict_pre_hook)
    opt.register_state_dict_post_hook(_state_dict_post_hook)
    state_dict = opt.state_dict()
    assert "test" not in state_dict["state"]
    assert state_dict["ran_state_dict_pre_hook"] is True


@cases("test_load_state_dict_pre_hook_and_prepend")
def test_load_state_dict_pre_hook_and_prepend(name, idx):
    opt = _one_param_optimizer("test_load_state_dict_pre_hook_and_prepend", name, idx)
    state_dict = opt.state_dict()
    opt.register_load_state_dict_pre_hook(_load_state_dict_pre_hook1)
    opt.load_state_dict(state_dict)
    assert opt.param_groups[0]["lr"] == 0.002
    opt.register_load_state_dict_pre_hook(_load_state_dict_pre_hook2, prepend=True)
    opt.load_state_dict(state_dict)
    # prepended: hook2's copy (0.003) is then edited by hook1 (0.002)
    assert opt.param_groups[0]["lr"] == 0.002


@cases("test_load_state_dict_post_hook")
def test_load_state_dict_post_hook(name, idx):
    opt = _one_param_optimizer("test_load_state_dict_post_hook", name, idx)
    opt.register_load_state_dict_post_hook(_load_state_dict_post_hook)
    opt.load_state_dict(opt.state_dict())
    state = opt.state
    assert state.get("ran_load_state_dict_pre_hook2") is False
    assert state.get("ran_load_state_dict_post_hook") is True


@cases("test_load_state_dict_pre_post_hook")
def test_load_state_dict_pre_post_hook(name, idx):
    opt = _one_param_optimizer("test_load_state_dict_pre_post_hook", name, idx)
    opt.register_load_state_dict_pre_hook(_load_state_dict_pre_hook2)
    opt.register_load_state_dict_post_hook(_load_state_dict_post_hook)
    opt.load_state_dict(opt.state_dict())
    state = opt.state
    assert state.get("ran_load_state_dict_pre_hook2") is True
    assert state.get("ran_load_state_dict_post_hook") is True


def _hook_params():
    return [jnp.asarray([[1.0, 1.0]], jnp.float32)]  # torch.tensor([[1, 1]], dtype=float32): 2-D for Muon


def _dummy_closure(params):
    """test_step_*_hook's `dummy_closure`: returns 1 (LBFGS's step needs a closure)."""
    return 1


def _hook_closure(info):
    return _dummy_closure if info.step_requires_closure else None


@cases("test_step_post_hook")
def test_step_post_hook(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "all")[_cfg("test_step_post_hook", name, idx)["i"]].kwargs
    data = 2

    def post_hook(opt, args, kwargs):
        nonlocal data
        data += 2

    opt = _cls(name)(_hook_params(), **_ok(kwargs))
    handle = opt.register_step_post_hook(post_hook)
    closure = _hook_closure(info)
    opt.step(closure)
    opt.step(closure)
    assert data == 6
    handle.remove()
    opt.step(closure)
    assert data == 6


@cases("test_step_pre_hook")
def test_step_pre_hook(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "all")[_cfg("test_step_pre_hook", name, idx)["i"]].kwargs
    data = 5

    def pre_hook(opt, args, kwargs):
        nonlocal data
        data += 2

    opt = _cls(name)(_hook_params(), **_ok(kwargs))
    handle = opt.register_step_pre_hook(pre_hook)
    closure = _hook_closure(info)
    opt.step(closure)
    opt.step(closure)
    assert data == 9
    handle.remove()
    opt.step(closure)
    assert data == 9


@cases("test_step_all_hooks")
def test_step_all_hooks(name, idx):
    info = DB[name]
    kwargs = _inputs(name, "all")[_cfg("test_step_all_hooks", name, idx)["i"]].kwargs
    data = []
    hook = lambda value: lambda opt, args, kwargs: data.append(value)  # noqa: E731
    opt = _cls(name)(_hook_params(), **_ok(kwargs))
    opt2 = optim.SGD(_hook_params())  # torch shares the tensors; ours own their arrays
    handles = [optim.register_optimizer_step_pre_hook(hook(0)), optim.register_optimizer_step_post_hook(hook(5))]
    try:
        handles += [opt.register_step_pre_hook(hook(1)), opt.register_step_post_hook(hook(2)),
                    opt2.register_step_pre_hook(hook(1)), opt2.register_step_post_hook(hook(2))]
        closure = _hook_closure(info)
        opt.step(closure)
        assert data == [0, 1, 2, 5]
        opt2.step(None)
        assert data == [0, 1, 2, 5] * 2
        opt.step(closure)
        assert data == [0, 1, 2, 5] * 3
    finally:
        for handle in handles:
            handle.remove()
    opt.step(closure)
    opt2.step(None)
    assert data == [0, 1, 2, 5] * 3


# ------------------------------------------------------------------------------------ misc
@cases("test_deepcopy_copies_all_public_attrs")
def test_deepcopy_copies_all_public_attrs(name, idx):
    info = DB[name]
    kwargs = _ok(_inputs(name, "no_diff")[_cfg("test_deepcopy_copies_all_public_attrs", name, idx)["i"]].kwargs)
    torch.manual_seed(0)
    params = [_j(torch.randn(2, 3)) for _ in range(2)]
    grads = [_j(torch.rand(2, 3)) for _ in range(2)]
    optimizer = _cls(name)(params, **kwargs)
    optimizer.backward(_maybe_sparse(info, grads))
    for _ in range(3):  # make some state (LBFGS's closure returns 1, the others' None)
        _no_backward_step(optimizer, info, 1, grads)

    def public(obj):
        return {k for k in obj.__dict__ if not k.startswith("_")}

    assert public(optimizer) == public(copy.deepcopy(optimizer))


@cases("test_second_order_optims_return_consistent_types")
def test_second_order_optims_return_consistent_types(name, idx):
    kwargs = _inputs(name, "plain")[_cfg("test_second_order_optims_return_consistent_types", name, idx)["i"]].kwargs
    torch.manual_seed(0)
    params = [_j(torch.randn(10, 5)), _j(torch.randn(10))]
    closure = functools.partial(_value_grads_loss, value=_j(torch.tensor([10], dtype=torch.float32)), grads=None)
    kwargs["tolerance_grad"] = math.inf
    optim_inf = _cls(name)(_copies(params), **_ok(kwargs))
    kwargs["tolerance_grad"] = -math.inf
    optim_neg_inf = _cls(name)(_copies(params), **_ok(kwargs))
    res1 = optim_inf.step(closure)
    res2 = optim_neg_inf.step(closure)
    assert type(res1) is type(res2)


def _torch_state_keys(name, kwargs, weight, x):
    """torch's state after one step of test_non_empty_state: {param index: sorted keys}."""
    model = torch.nn.Linear(5, 5, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    opt = DB[name].optim_cls(model.parameters(), **kwargs)
    opt.zero_grad()
    model(x).sum().backward()
    if DB[name].only_supports_sparse_grads:
        model.weight.grad = model.weight.grad.to_sparse()
    opt.step(lambda: 1.0) if DB[name].step_requires_closure else opt.step()
    index = {p: i for i, p in enumerate(model.parameters())}
    return {index[p]: sorted(s) for p, s in opt.state.items()}


def _linear_loss(params, x):
    """`Linear(5, 5, bias=False)(x).sum()` for a (2, 5) batch."""
    (w,) = params
    return jnp.sum(x @ w.T)


@cases("test_non_empty_state")
def test_non_empty_state(name, idx):
    """torch: every state entry is non-empty after one step. Ours hands out only stepped
    params' entries, so the translation also compares which params have state, and their keys,
    with torch's live run of the same step."""
    info = DB[name]
    inp_idx = _cfg("test_non_empty_state", name, idx)["i"]
    torch.manual_seed(0)
    weight, x = torch.nn.Linear(5, 5, bias=False).weight.detach().clone(), torch.rand(2, 5)
    opt = _cls(name)([_j(weight)], **_ok(_inputs(name, "plain")[inp_idx].kwargs))
    grads = _value_and_grad(_linear_loss)(opt.params, _j(x))[1]
    opt.zero_grad()
    opt.backward(_maybe_sparse(info, grads))
    _no_backward_step(opt, info, 1.0, grads)
    state = opt.state
    for entry in state.values():
        assert len(entry) > 0
    assert {k: sorted(v) for k, v in state.items()} == _torch_state_keys(
        name, _inputs(name, "plain")[inp_idx].kwargs, weight, x)


@cases("test_step_iteration")
def test_step_iteration(name, idx):
    """torch counts the closure's calls (6); our step evaluates the loss inside one jitted
    call, so the count is LBFGS's `func_evals`, which torch's state keeps equal to it."""
    named_params, x, loss_fn = _model_and_input("SGD")  # the Conv2d + BatchNorm2d model
    optimizer = optim.LBFGS([p for _, p in named_params], max_iter=1, max_eval=5, line_search_fn="strong_wolfe")
    optimizer.step(loss_fn, x)
    assert optimizer.state_dict()["state"][0]["func_evals"] == 6
