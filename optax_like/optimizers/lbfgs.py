"""torch.optim.LBFGS as a functional optimizer: one `update` is one torch `step(closure)`.

L-BFGS is not a gradient transformation in the usual sense: a torch `step(closure)` evaluates the
loss several times (`max_iter` iterations, each with a fixed step or a strong-Wolfe line search,
at most about `max_eval` evaluations). Here the whole step runs inside one `lax.while_loop`
whose body evaluates `jax.value_and_grad(value_fn)` exactly once (the objective is traced once),
so the step jits into a single XLA computation; the history lives in preallocated
`(history_size, n)` ring buffers.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec

from optax_like.core import numerics
from optax_like.core import tree as tree_lib
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformationExtraArgs
from optax_like.core.hyperparams import integer_args
from optax_like.core.torch_layout import declare_torch_state, host_array
from optax_like.transforms.line_search import (
    StrongWolfeState,
    strong_wolfe_absorb,
    strong_wolfe_init,
    strong_wolfe_result,
)

__all__ = ["LBFGSState", "lbfgs", "lbfgs_history", "PARAM_GROUPS_ERROR", "MAX_HISTORY_BYTES"]

# The most memory `init` allocates for the history ring buffers (`old_dirs` and `old_stps`:
# 2 x history_size x n x itemsize bytes). torch grows its history lists one pair per iteration;
# here they are preallocated so that a step compiles once, so a huge `history_size` (or a loaded
# state dict carrying one) would allocate it all at the first step: refused instead. Raise it
# (`optax_like.optimizers.lbfgs.MAX_HISTORY_BYTES = ...`) for a larger history on purpose.
MAX_HISTORY_BYTES = 4 * 2**30

# torch's message for an LBFGS built on several param groups (raised by the stateful adapter).
PARAM_GROUPS_ERROR = "LBFGS doesn't support per-parameter options (parameter groups)"

_C1 = 1e-4
_C2 = 0.9


# a state entry: on the device, or on the host (a state loaded from torch is built there)
StateArray = Union[jax.Array, np.ndarray]


class LBFGSState(NamedTuple):
    """torch's `optimizer.state[params[0]]` for LBFGS, preallocated (torch's names).

    Flat vectors have one entry per real number of the params (complex params count twice, as
    torch's `view_as_real`). `old_dirs`, `old_stps`, `ro` are ring buffers: torch's list entry
    `i` (0 = oldest) is row `(history_start + i) % history_size`, for `i < history_len`
    (`lbfgs_history` returns them in torch's order). `al` is in torch's (logical) order; torch
    starts it as `[None] * history_size`, here zeros. Before the first iteration `d`, `t`,
    `H_diag`, `prev_flat_grad`, `prev_loss` are zeros/one placeholders (torch has no entry).
    `orig_loss` is not a torch state key: it is the loss at the params given to the latest
    update (the value torch's `step(closure)` returns).
    """

    func_evals: StateArray  # int32, total closure evaluations
    n_iter: StateArray  # int32, total iterations
    d: StateArray  # (n,) last search direction
    t: StateArray  # last step size
    old_dirs: StateArray  # (history_size, n): y = g_{k+1} - g_k
    old_stps: StateArray  # (history_size, n): s = t d
    ro: StateArray  # (history_size,): 1 / (y . s)
    H_diag: StateArray  # initial inverse-Hessian scale y.s / y.y
    prev_flat_grad: StateArray  # (n,)
    prev_loss: StateArray
    al: StateArray  # (history_size,)
    history_start: StateArray  # int32: ring-buffer row of the oldest entry
    history_len: StateArray  # int32: len(old_dirs)
    orig_loss: StateArray  # loss at the start of the latest step


# torch's state keys, in the order torch's step writes them (`al` is created lazily).
_ITER_KEYS = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")


def _torch_entry(state: LBFGSState) -> dict:
    """torch's `optimizer.state[params[0]]` for `state` ({} before the first step): `func_evals`,
    `n_iter` (Python ints); after the first iteration `d, t, old_dirs, old_stps, ro, H_diag,
    prev_flat_grad, prev_loss` (lists oldest first; `t`, `prev_loss` Python floats); after the
    second `al` (padded with None like torch's)."""
    func_evals, n_iter = int(state.func_evals), int(state.n_iter)
    if func_evals == 0 and n_iter == 0:
        return {}  # torch: no entry before the first step
    entry: dict = {"func_evals": func_evals, "n_iter": n_iter}
    if n_iter >= 1:
        old_dirs, old_stps, ro = lbfgs_history(state)
        entry.update(
            d=state.d, t=float(state.t), old_dirs=list(old_dirs), old_stps=list(old_stps), ro=list(ro),
            H_diag=state.H_diag, prev_flat_grad=state.prev_flat_grad, prev_loss=float(state.prev_loss),
        )
    if n_iter >= 2:  # torch creates `al` at its first L-BFGS direction; filled below len(old_dirs)
        hlen = int(state.history_len)
        entry["al"] = [state.al[i] if i < hlen else None for i in range(state.al.shape[0])]
    return entry


def _host(x, name: str) -> np.ndarray:
    """A loaded entry (torch tensor, array, Python number) as a real NumPy array (a copy)."""
    arr = host_array(x, f"loaded LBFGS state entry {name!r}")
    if np.iscomplexobj(arr):
        raise TypeError(f"loaded LBFGS state entry {name!r} is complex; LBFGS state is real.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_ or arr.dtype == jnp.bfloat16):
        raise TypeError(f"loaded LBFGS state entry {name!r} is not numeric: {x!r}")
    return arr


def _host_scalar(x, name: str) -> np.ndarray:
    arr = _host(x, name)
    if arr.size != 1:
        raise ValueError(f"loaded LBFGS state entry {name!r} must be a scalar, got shape {arr.shape}")
    return arr.reshape(())


def _host_int(x, name: str) -> int:
    value = float(_host_scalar(x, name).astype(np.float64))
    if not np.isfinite(value) or value != int(value) or value < 0 or value > np.iinfo(np.int32).max:
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


def _from_torch_entry(fresh: LBFGSState, entry: dict) -> LBFGSState:
    """`fresh` with torch's LBFGS entry (`_torch_entry`'s layout; tensors or arrays) written in,
    host arrays in `fresh`'s dtypes (pure). A history longer than `history_size` keeps the newest
    pairs."""
    unknown = set(entry) - {"func_evals", "n_iter", "al", *_ITER_KEYS}
    if unknown:
        raise ValueError(f"loaded LBFGS state has unknown entries {sorted(unknown)}")
    n, m = fresh.d.shape[0], fresh.ro.shape[0]
    new = {}
    new["func_evals"] = _host_int(entry.get("func_evals", 0), "func_evals")
    new["n_iter"] = _host_int(entry.get("n_iter", 0), "n_iter")
    present = [k for k in _ITER_KEYS if k in entry]
    if present and len(present) != len(_ITER_KEYS):
        missing = [k for k in _ITER_KEYS if k not in entry]
        raise ValueError(f"loaded LBFGS state has {present} but lacks {missing} (torch writes them together)")
    drop = 0
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
        new.update(old_dirs=old_dirs, old_stps=old_stps, ro=ro, history_start=0, history_len=kept)
    if "al" in entry:
        al_list = entry["al"]
        if not isinstance(al_list, (list, tuple)):
            raise TypeError(f"loaded LBFGS state entry 'al' must be a list, got {type(al_list).__name__}")
        al = np.zeros((m,))
        for i, a in enumerate(list(al_list)[drop:][:m]):
            if a is not None:
                al[i] = _host_scalar(a, f"al[{i}]")
        new["al"] = al
    return LBFGSState(**{
        name: np.asarray(new[name]).astype(like.dtype) if name in new else like
        for name, like in zip(LBFGSState._fields, fresh)
    })


# torch keeps LBFGS's whole state as one dict under the first param.
declare_torch_state(LBFGSState, export=_torch_entry, load=_from_torch_entry,
                    flat_keys=("d", "prev_flat_grad", "old_dirs", "old_stps"))


def lbfgs_history(state: LBFGSState):
    """`(old_dirs, old_stps, ro)` in torch's list order (oldest first), `history_len` rows."""
    m = state.ro.shape[0]
    n = int(state.history_len)
    rows = (int(state.history_start) + np.arange(n)) % m
    return state.old_dirs[rows], state.old_stps[rows], state.ro[rows]


# ---------------------------------------------------------------------------------------------
# Flattening: torch's _gather_flat_grad / _add_grad order (leaf order, complex as real pairs).
# ---------------------------------------------------------------------------------------------


def _explicit_sharding(x):
    """x's sharding when it is part of x's type (a leaf sharded over Explicit mesh axes), else None."""
    try:
        sharding = jax.typeof(x).sharding
    except (TypeError, AttributeError):  # pragma: no cover - not an array
        return None
    spec = getattr(sharding, "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return None
    return sharding


def _replicated(x):
    """x resharded to replicated when its type is sharded (Explicit meshes), else x unchanged.

    On an Explicit mesh a reshape that merges sharded dimensions has no inferable output
    sharding; the flat vectors (and the `(history_size, n)` buffers) are replicated instead.
    """
    sharding = _explicit_sharding(x)
    if sharding is None:
        return x
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))


def _flattener(params):
    leaves, treedef = jax.tree.flatten(params)  # None leaves are empty subtrees
    dtypes = [jnp.asarray(l).dtype for l in leaves]
    shardings = [_explicit_sharding(jnp.asarray(l)) for l in leaves]
    views = [numerics.real_view(_replicated(jnp.asarray(l))) for l in leaves]
    flat, unravel_views = ravel_pytree(views)

    def flatten(tree):
        parts = [numerics.real_view(_replicated(jnp.asarray(l))) for l in treedef.flatten_up_to(tree)]
        return ravel_pytree(parts)[0].astype(flat.dtype)

    def unflatten(vec):
        out = []
        for view, dtype, sharding in zip(unravel_views(vec), dtypes, shardings):
            if jnp.issubdtype(dtype, jnp.complexfloating):
                view = lax.complex(view[..., 0], view[..., 1]).astype(dtype)
            if sharding is not None:  # back to the param's own sharding
                view = jax.sharding.reshard(view, sharding)
            out.append(view)
        return treedef.unflatten(out)

    return flat, flatten, unflatten, treedef


def _check_params(params):
    tree_lib.check_params(params)
    if not jax.tree.leaves(params):
        raise ValueError("optimizer got an empty parameter list")


def _check_int(value, name):
    """An int, or an integer scalar array (possibly traced: the adapter feeds group values)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        return
    if isinstance(value, (jax.Array, np.ndarray)) and np.shape(value) == () and jnp.issubdtype(value.dtype, jnp.integer):
        return
    raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")


def _check_history_bytes(history_size: int, n: int, dtype) -> None:
    """Refuses, before allocating, history buffers larger than MAX_HISTORY_BYTES."""
    itemsize = jnp.dtype(dtype).itemsize
    needed = 2 * history_size * n * itemsize
    if needed > MAX_HISTORY_BYTES:
        raise ValueError(
            f"history_size={history_size} for {n} parameters needs {needed / 2**30:.1f} GiB of "
            f"preallocated history (2 x history_size x {n} x {itemsize} bytes), more than "
            f"optax_like.optimizers.lbfgs.MAX_HISTORY_BYTES ({MAX_HISTORY_BYTES / 2**30:g} GiB). "
            "torch grows its history one pair per iteration; here it is allocated at init so that a "
            "step compiles once: lower history_size, or raise MAX_HISTORY_BYTES on purpose."
        )


# ---------------------------------------------------------------------------------------------
# torch's float sum order (ATen's cascade_sum, aten/src/ATen/native/cpu/SumKernel.cpp), for the
# first step size min(1, 1/|g|_1). XLA sums in another order, so |g|_1 could differ by an ulp.
# Every add below is a separate elementwise add in a fixed order (no multiply to contract), so
# the result is torch's bit for bit. Measured against torch 2.13 on CPU (tests/parity/
# test_lbfgs.py): float32 and float64, lengths 1..10**6, identical under ATEN_CPU_CAPABILITY=
# default/avx2/avx512 (ATen sums in 32-byte vectors on every build). Above 32768 elements torch
# splits a sum across its threads (at::parallel_reduce), so there it is torch's single-thread order.
# ---------------------------------------------------------------------------------------------


def _sequential_sum(x):
    """x[0] + x[1] + ... along axis 0, left to right (0 for an empty axis)."""
    if x.shape[0] == 0:
        return jnp.zeros(x.shape[1:], x.dtype)
    acc = x[0]
    for i in range(1, x.shape[0]):
        acc = acc + x[i]
    return acc


def _group_sums(x, step):
    """The sequential sums of each full group of `step` consecutive entries along axis 0."""
    m = x.shape[0] // step
    return _sequential_sum(jnp.moveaxis(x[: m * step].reshape((m, step) + x.shape[1:]), 1, 0))


def _multi_row_sum(rows):
    """ATen's `multi_row_sum` over axis 0: 4 accumulator levels; level 0 adds rows and flushes
    into level 1 every `step` rows, levels 1 and 2 flush into the next every `step` items, level
    3 keeps all; at the end level 0 (the rows after the last flush) + level 1 + level 2 + level 3."""
    size = rows.shape[0]
    ceil_log2 = 1 if size <= 2 else (size - 1).bit_length()
    step = 1 << max(4, ceil_log2 // 4)
    acc = _sequential_sum(rows[(size // step) * step:])
    items = _group_sums(rows, step)
    for _ in (1, 2):
        leftover = _sequential_sum(items[(items.shape[0] // step) * step:])
        items = _group_sums(items, step)
        acc = acc + leftover
    return acc + _sequential_sum(items)


def _row_sum(items):
    """ATen's `row_sum`: 4 interleaved partial sums (ILP), the tail into the first, then p0+p1+p2+p3."""
    size_ilp = items.shape[0] // 4
    partial = _multi_row_sum(items[: size_ilp * 4].reshape((size_ilp, 4) + items.shape[1:]))
    acc = partial[0]
    for i in range(size_ilp * 4, items.shape[0]):
        acc = acc + items[i]
    for k in range(1, 4):
        acc = acc + partial[k]
    return acc


_ATEN_GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: longer sums are split across torch's threads


def torch_sum(x):
    """`x.sum()` of a 1-D float vector in torch's CPU order (ATen's vectorized cascade sum).

    The vector is read as 32-byte lanes (8 float32 / 4 float64): the lanes are summed by
    `_row_sum`, then the scalar tail and the lanes are added one by one; a vector shorter than
    one lane row is summed by the scalar `_row_sum`.
    """
    n = x.shape[0]
    lanes = 32 // jnp.dtype(x.dtype).itemsize
    if n < lanes:
        return _row_sum(x)
    rows = n // lanes
    lane_sums = _row_sum(x[: rows * lanes].reshape(rows, lanes))
    acc = jnp.zeros((), x.dtype)
    for k in range(rows * lanes, n):
        acc = acc + x[k]
    for k in range(lanes):
        acc = acc + lane_sums[k]
    return acc


@integer_args("max_iter", "max_eval", "history_size")
def lbfgs(
    lr: Any = 1,
    max_iter: int = 20,
    max_eval: Optional[int] = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: Optional[str] = None,
) -> GradientTransformationExtraArgs:
    """L-BFGS as torch.optim.LBFGS computes it; `update` performs one torch `step(closure)`.

    Per iteration k (at most `max_iter` per update, counting `n_iter` globally over updates):

        first iteration ever:  d = -g,  history cleared,  H_diag = 1,  t = min(1, 1/|g|_1) * lr
        later:  y = g - g_prev,  s = t d;  if y.s > 1e-10: push (y, s, 1/y.s) (drop the oldest
                when history_size are kept) and H_diag = y.s / y.y;
                d = -H g by the two-loop recursion (torch's order);  t = lr
        stop if g.d > -tolerance_change (before moving);
        line_search_fn=None:  x += t d, and re-evaluate unless this is the last iteration;
        'strong_wolfe':       (f, g, t) = strong-Wolfe search (c1=1e-4, c2=0.9,
                              max_ls = max_eval - evaluations so far); x += t d
        stop if k == max_iter, evaluations >= max_eval, max|g| <= tolerance_grad,
             max|t d| <= tolerance_change, or |f - f_prev| < tolerance_change (torch's order).

    The step starts by evaluating the loss and gradient at `params` (torch's first closure call)
    and returns without moving when `max|g| <= tolerance_grad`.

    `update(grads, state, params, *, value_fn, value=None, **fn_kwargs)`:
      - `value_fn(params, **fn_kwargs)` returns the scalar loss; it is differentiated with
        `jax.value_and_grad` inside the loop. `fn_kwargs` (batches, ...) are passed unchanged.
      - `grads`: None (recommended), or the gradient of `value_fn` at `params`, used as the
        first closure evaluation instead of evaluating it; then `value` is the loss at `params`
        (if None, the loss is computed by `value_fn` alone). Either way this counts as one
        closure evaluation in `func_evals`, as in torch. A None leaf in `grads` where params
        has an array is a zero gradient (torch's `_gather_flat_grad` for `p.grad is None`).
      - returns `updates` in the params' structure, `x_final - params` (apply with
        `apply_updates`, which rounds once: the result can differ from torch's in-place sums by
        an ulp of the params per step), and the new state; `state.orig_loss` is the loss at
        `params` (what torch's `step` returns).
    Params may be any pytree of float/complex arrays (None leaves are not optimized); the flat
    vector is their concatenation in leaf order (complex leaves as real pairs, like torch).
    Sharded params: on an Explicit mesh each leaf is resharded to replicated before it is
    flattened (the flat vectors and `(history_size, n)` buffers are replicated, as torch keeps
    them on one device), and `value_fn` and the updates see each param's own sharding.

    Precision: the arithmetic runs in the params' dtype, like torch's tensors. torch keeps the
    loss as a Python float (float64) of the float32 closure value; here it stays in the params'
    dtype, and `|f - f_prev| < tolerance_change` decides the same (the difference of two float32
    values within 2x of each other is exact in float32). torch's other checks compare float32
    tensors with Python floats in float32, as here. `|g|_1` (the first step size) is summed in
    torch's (ATen's) order by `torch_sum`, so the first iteration is torch's bit for bit given the
    same loss and gradient. The dot products cannot be: torch's `Tensor.dot` is the BLAS's
    sdot/ddot (MKL on x86), whose summation order is the library's internal choice (measured,
    float32, same torch: MKL_CBWR=COMPATIBLE or MKL_ENABLE_INSTRUCTIONS=AVX2 changes 37% / 47% of
    random length-9 dots by an ulp, and the thread count changes long ones), and XLA's order and
    FMA contractions depend on how it fuses the loop. (torch's `add_(y, alpha=a)` is a fused
    multiply-add on AVX2/AVX-512 builds, not on ATEN_CPU_CAPABILITY=default; XLA contracts
    `q + a * y` into an FMA where it fuses them.) So float32 iterates drift from torch's by ulps
    from the second iteration on, and a count differs where an ulp decides a break: near a
    minimum `|f - f_prev| < 1e-9` means `f == f_prev` for |f| > ~1e-2. Measured with identical
    loss values: on tests/parity's float32 logistic problem torch's own first step takes 10
    iterations with MKL's dot and 9 with the same dot summed in XLA's order or in float64 and
    rounded (ours: 9); its mlp and rosenbrock2 configurations keep torch's counts whatever the
    order, and ours follow them. float64 follows torch's counts.

    Differences from torch, all for inputs torch fails on: an unknown `line_search_fn` raises
    torch's RuntimeError("only 'strong_wolfe' is supported") here at construction (torch raises
    it at the first line search); `history_size < 1` and, with strong Wolfe, `max_eval < 1` raise
    ValueError here (torch crashes with IndexError / UnboundLocalError during the step).
    Memory: the history is preallocated (`2 x history_size x n` numbers) where torch grows it one
    pair per iteration; `init` refuses (ValueError, before allocating) a history larger than
    `MAX_HISTORY_BYTES` (4 GiB; a module attribute: raise it on purpose), so that a huge
    `history_size`, or a loaded state dict carrying one, cannot exhaust memory.
    `lr`, `tolerance_grad`, `tolerance_change` may be floats or (traced) scalar arrays, and
    `max_iter`, `max_eval` ints or (traced) integer scalars, so one compiled step serves every
    value (the adapter feeds torch's `param_groups[0]` entries); `history_size` and
    `line_search_fn` fix the program. Schedules are not supported (torch's schedulers change
    LBFGS's lr through the adapter).
    torch counterpart: `torch.optim.LBFGS(params, lr=1, max_iter=20, max_eval=None,
    tolerance_grad=1e-7, tolerance_change=1e-9, history_size=100, line_search_fn=None)`.
    """
    v.check_hyperparam(lr, "lr", allow_schedule=False)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    if isinstance(history_size, bool) or not isinstance(history_size, (int, np.integer)):
        raise TypeError(f"history_size must be an int, got {type(history_size).__name__} {history_size!r}.")
    _check_int(max_iter, "max_iter")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    _check_int(max_eval, "max_eval")
    v.check_hyperparam(tolerance_grad, "tolerance_grad", allow_schedule=False)
    v.check_hyperparam(tolerance_change, "tolerance_change", allow_schedule=False)
    if line_search_fn is not None and line_search_fn != "strong_wolfe":
        raise RuntimeError("only 'strong_wolfe' is supported")
    if history_size < 1:
        raise ValueError(
            f"history_size must be >= 1, got {history_size} (torch.optim.LBFGS fails with an "
            "IndexError at its first history update)."
        )
    concrete_eval, concrete_iter = v.concrete_value(max_eval), v.concrete_value(max_iter)
    if (line_search_fn is not None and concrete_eval is not None and concrete_iter is not None
            and concrete_eval < 1 and concrete_iter >= 1):
        raise ValueError(
            f"max_eval must be >= 1 with line_search_fn='strong_wolfe', got {max_eval} "
            "(torch.optim.LBFGS fails with an UnboundLocalError in its line search)."
        )
    history_size = int(history_size)
    if concrete_iter is not None:
        max_iter = int(concrete_iter)
    if concrete_eval is not None:
        max_eval = int(concrete_eval)
    use_ls = line_search_fn is not None

    def init(params):
        _check_params(params)
        flat, _, _, _ = _flattener(params)
        n, dtype = flat.shape[0], flat.dtype
        m = history_size
        _check_history_bytes(m, n, dtype)
        zero = jnp.zeros((), dtype)
        return LBFGSState(
            func_evals=jnp.zeros((), jnp.int32),
            n_iter=jnp.zeros((), jnp.int32),
            d=jnp.zeros((n,), dtype),
            t=zero,
            old_dirs=jnp.zeros((m, n), dtype),
            old_stps=jnp.zeros((m, n), dtype),
            ro=jnp.zeros((m,), dtype),
            H_diag=jnp.ones((), dtype),
            prev_flat_grad=jnp.zeros((n,), dtype),
            prev_loss=jnp.zeros((), dtype),
            al=jnp.zeros((m,), dtype),
            history_start=jnp.zeros((), jnp.int32),
            history_len=jnp.zeros((), jnp.int32),
            orig_loss=jnp.zeros((), dtype),
        )

    def update(updates, state, params=None, *, value_fn: Optional[Callable] = None, value=None, **fn_kwargs):
        grads = updates  # (the protocol's name; torch's first closure evaluation)
        if params is None:
            raise ValueError("lbfgs needs params: update(grads, state, params, value_fn=...).")
        if value_fn is None or not callable(value_fn):
            raise ValueError(
                "lbfgs needs the objective: update(grads, state, params, value_fn=loss_fn), "
                "where loss_fn(params, **fn_kwargs) returns a scalar loss (torch's closure)."
            )
        if not isinstance(state, LBFGSState):
            raise TypeError(f"lbfgs expects an LBFGSState, got {type(state).__name__}.")
        _check_params(params)
        x0, flatten, unflatten, treedef = _flattener(params)
        dtype = x0.dtype
        n = x0.shape[0]
        if state.d.shape != (n,) or state.ro.shape != (history_size,):
            raise ValueError(
                f"lbfgs state was built for {state.d.shape[0]} parameters and history_size "
                f"{state.ro.shape[0]}, but params have {n} and history_size is {history_size}."
            )
        if grads is not None:
            tree_lib.check_same_structure(params, grads, "params", "grads")
            grads = jax.tree.map(
                lambda p, g: p if p is None else (jnp.zeros_like(p) if g is None else g),
                params, grads, is_leaf=tree_lib.is_none,
            )

        def loss_of(vec):
            loss = value_fn(unflatten(vec), **fn_kwargs)
            loss = jnp.asarray(loss)
            if loss.size == 1:
                loss = loss.reshape(())  # torch's float(closure()): a one-element loss is its value
            else:
                raise TypeError(f"value_fn must return a scalar loss, got shape {loss.shape}.")
            return loss.astype(dtype)

        value_and_grad = jax.value_and_grad(loss_of)
        scal = lambda x: numerics.scalar(x, dtype)
        lr_ = scal(lr)
        tol_grad = scal(tolerance_grad)
        tol_change = scal(tolerance_change)
        m = history_size
        INIT, LINE_SEARCH, FIXED = 0, 1, 2

        def max_abs(vec):
            return jnp.max(jnp.abs(vec))

        ls0 = strong_wolfe_init(jnp.zeros((), dtype), jnp.zeros((n,), dtype), 0.0,
                                jnp.zeros((n,), dtype), 0.0, 0)
        c: dict[str, Any] = dict(
            x=x0, f=jnp.zeros((), dtype), g=jnp.zeros((n,), dtype),
            d=state.d, t=state.t, H_diag=state.H_diag,
            prev_g=state.prev_flat_grad, prev_loss=state.prev_loss,
            old_dirs=state.old_dirs, old_stps=state.old_stps, ro=state.ro, al=state.al,
            hstart=state.history_start, hlen=state.history_len,
            n_iter=state.n_iter, func_evals=state.func_evals, orig_loss=state.orig_loss,
            it=jnp.zeros((), jnp.int32), cur_evals=jnp.zeros((), jnp.int32),
            opt_cond=jnp.zeros((), bool), mode=jnp.asarray(INIT, jnp.int32),
            finished=jnp.zeros((), bool), iter_done=jnp.zeros((), bool),
            need_start=jnp.zeros((), bool),
            ls=ls0 if use_ls else None,
        )

        # ---- absorbing one evaluation -----------------------------------------------------
        def absorb_init(c, f_new, g_new):
            opt = max_abs(g_new) <= tol_grad
            return dict(c, f=f_new, g=g_new, orig_loss=f_new, func_evals=c["func_evals"] + 1,
                        cur_evals=jnp.ones((), jnp.int32), opt_cond=opt, finished=opt, need_start=~opt)

        def absorb_fixed(c, f_new, g_new):
            return dict(c, f=f_new, g=g_new, opt_cond=max_abs(g_new) <= tol_grad,
                        cur_evals=c["cur_evals"] + 1, func_evals=c["func_evals"] + 1,
                        iter_done=jnp.ones((), bool))

        def absorb_line_search(c, f_new, g_new):
            ls = strong_wolfe_absorb(c["ls"], f_new, g_new, jnp.dot(g_new, c["d"]), _C1, _C2, tol_change)
            c = dict(c, ls=ls, cur_evals=c["cur_evals"] + 1, func_evals=c["func_evals"] + 1)

            def accept(c):
                f, g, t = strong_wolfe_result(c["ls"])
                return dict(c, f=f, g=g, t=t, x=c["x"] + t * c["d"], opt_cond=max_abs(g) <= tol_grad,
                            iter_done=jnp.ones((), bool))

            return lax.cond(ls.finished, accept, lambda c: c, c)

        # ---- end of an iteration: torch's break conditions, in order ----------------------
        def end_checks(c):
            stop = (
                (c["it"] == max_iter)
                | (c["cur_evals"] >= max_eval)
                | c["opt_cond"]
                | (max_abs(c["d"] * c["t"]) <= tol_change)
                | (jnp.abs(c["f"] - c["prev_loss"]) < tol_change)
            )
            return dict(c, finished=stop, need_start=~stop)

        # ---- start of an iteration: direction, step size, first trial ---------------------
        def first_direction(c):
            return dict(c, d=-c["g"], hstart=jnp.zeros((), jnp.int32), hlen=jnp.zeros((), jnp.int32),
                        H_diag=jnp.ones((), dtype))

        def lbfgs_direction(c):
            g = c["g"]
            y = g - c["prev_g"]
            s = c["d"] * c["t"]
            ys = jnp.dot(y, s)
            push = ys > 1e-10
            full = c["hlen"] == m
            row = jnp.where(full, c["hstart"], (c["hstart"] + c["hlen"]) % m)
            old_dirs = c["old_dirs"].at[row].set(jnp.where(push, y, c["old_dirs"][row]))
            old_stps = c["old_stps"].at[row].set(jnp.where(push, s, c["old_stps"][row]))
            ro = c["ro"].at[row].set(jnp.where(push, 1.0 / ys, c["ro"][row]))
            hstart = jnp.where(push & full, (c["hstart"] + 1) % m, c["hstart"])
            hlen = jnp.where(push & ~full, c["hlen"] + 1, c["hlen"])
            H_diag = jnp.where(push, ys / jnp.dot(y, y), c["H_diag"])

            def first_loop(j, carry):
                q, al = carry
                i = hlen - 1 - j
                r_ = (hstart + i) % m
                a = jnp.dot(old_stps[r_], q) * ro[r_]
                return q + (-a) * old_dirs[r_], al.at[i].set(a)

            q, al = lax.fori_loop(0, hlen, first_loop, (-g, c["al"]))

            def second_loop(i, r):
                r_ = (hstart + i) % m
                be_i = jnp.dot(old_dirs[r_], r) * ro[r_]
                return r + (al[i] - be_i) * old_stps[r_]

            d = lax.fori_loop(0, hlen, second_loop, q * H_diag)
            return dict(c, d=d, old_dirs=old_dirs, old_stps=old_stps, ro=ro, al=al, hstart=hstart,
                        hlen=hlen, H_diag=H_diag)

        def start_iteration(c):
            def run(c):
                c = dict(c, it=c["it"] + 1, n_iter=c["n_iter"] + 1)
                first = c["n_iter"] == 1
                c = lax.cond(first, first_direction, lbfgs_direction, c)
                g = c["g"]
                c = dict(c, prev_g=g, prev_loss=c["f"])

                def first_step_size(g):  # min(1., 1/|g|_1) * lr, |g|_1 summed in torch's order
                    # (up to ATen's grain size: above it torch's order depends on its thread
                    # count, and emulating the single-thread order cost 0.5-1.3 s of compile
                    # at 1e6-1e7 params)
                    a = jnp.abs(g)
                    inv = 1.0 / (torch_sum(a) if n <= _ATEN_GRAIN_SIZE else jnp.sum(a))
                    return jnp.where(inv < 1.0, inv, jnp.ones((), dtype)) * lr_

                t = lax.cond(first, first_step_size, lambda g: lr_ * jnp.ones((), dtype), g)
                gtd = jnp.dot(g, c["d"])
                c = dict(c, t=t)
                no_descent = gtd > -tol_change
                if use_ls:
                    ls = strong_wolfe_init(t, c["d"], c["f"], g, gtd, max_eval - c["cur_evals"])
                    return dict(c, ls=ls, mode=jnp.asarray(LINE_SEARCH, jnp.int32), finished=no_descent)
                x = jnp.where(no_descent, c["x"], c["x"] + t * c["d"])
                last = c["it"] == max_iter  # no re-evaluation on the last iteration
                return dict(c, x=x, mode=jnp.asarray(FIXED, jnp.int32), finished=no_descent | last)

            return lax.cond(c["it"] < max_iter, run, lambda c: dict(c, finished=jnp.ones((), bool)), c)

        def advance(c):
            c = lax.cond(c["iter_done"], end_checks, lambda c: c, c)
            return lax.cond(c["need_start"], start_iteration, lambda c: c, c)

        def body(c: dict[str, Any]) -> dict[str, Any]:
            c = dict(c, iter_done=jnp.zeros((), bool), need_start=jnp.zeros((), bool))
            if use_ls:
                point = jnp.where(c["mode"] == LINE_SEARCH, c["x"] + c["ls"].t * c["d"], c["x"])
            else:
                point = c["x"]
            f_new, g_new = value_and_grad(point)
            branches = [absorb_init, absorb_line_search, absorb_fixed] if use_ls else [
                absorb_init, lambda c, f, g: c, absorb_fixed]
            c = lax.switch(c["mode"], branches, c, f_new, g_new)
            return advance(c)

        if grads is not None:
            # The caller's gradient is torch's first closure evaluation.
            f0 = loss_of(x0) if value is None else jnp.asarray(value).astype(dtype)
            c = absorb_init(c, f0, flatten(grads).astype(dtype))
            c = dict(c, mode=jnp.asarray(INIT, jnp.int32))
            c = advance(c)

        c = lax.while_loop(lambda c: ~c["finished"], body, c)  # type: dict[str, Any]

        delta = c["x"] - x0
        updates = unflatten(delta)
        new_state = LBFGSState(
            func_evals=c["func_evals"], n_iter=c["n_iter"], d=c["d"], t=c["t"],
            old_dirs=c["old_dirs"], old_stps=c["old_stps"], ro=c["ro"], H_diag=c["H_diag"],
            prev_flat_grad=c["prev_g"], prev_loss=c["prev_loss"], al=c["al"],
            history_start=c["hstart"], history_len=c["hlen"], orig_loss=c["orig_loss"],
        )
        return updates, new_state

    return GradientTransformationExtraArgs(init, update)
