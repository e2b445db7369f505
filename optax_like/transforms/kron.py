"""`scale_by_kron`: timm.optim.Kron's whole step (PSGD Kron, Li's Kronecker-factored
preconditioner, in Evan Walters' formulation as timm 1.0.31 ships it)."""

from __future__ import annotations

import math
import string
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
from jax import core as jax_core
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core import validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import as_dtype
from optax_like.core.leaf_scalars import LeafScalars, init_counts, next_counts, select_present
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import is_none, map_params
from optax_like.core.tree import zeros_like as tree_zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.weight_decay import decoupled_decay_keep

COMPLEX_MESSAGE = "clamp is not supported for complex types"  # timm's error at its first step (the RMS cap)
MEMORY_SAVE_MODES = (None, "one_diag", "smart_one_diag", "all_diag")
DEFAULT_SEED = 1337  # timm's `random.Random(1337)`
_TINY = float(jnp.finfo(jnp.bfloat16).tiny)  # timm's `torch.finfo(torch.bfloat16).tiny`
_BALANCE_PROB = 0.01
_LETTERS = string.ascii_lowercase + string.ascii_uppercase
_HIGHEST = lax.Precision.HIGHEST


class ScaleByKronState(NamedTuple):
    momentum_buffer: Any  # the momentum (mu_dtype, else the param's dtype); the flattened grad's shape with `flatten`
    Q: Any  # per param a tuple of preconditioner factors (timm's list `state['Q']`): 1-D diagonal or 2-D triangular
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    update_counter: LeafScalars  # steps since the preconditioner's last update (timm's state['update_counter'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByKronState,
    buffers=("momentum_buffer", "Q"),
    scalars={"step": INT_STEP, "update_counter": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
    attribute_group_entries=("deterministic",),  # timm's optimizer attribute, not a group entry
    own_dtype=("momentum_buffer", "Q"),
    reduced=("momentum_buffer", "Q"),
    lists=("Q",),
)


class KronDraws(NamedTuple):
    """The random values of one param's step: `balance` (uniform in [0, 1), timm's
    `rng.random() < 0.01`), `V` (the probe, standard normal of the preconditioned shape in the
    preconditioner's dtype, timm's `torch.randn`), `weight_decay` (uniform in [0, 1), timm's
    stochastic weight decay `2 * rng.random() * wd`)."""

    balance: jax.Array
    V: jax.Array
    weight_decay: jax.Array


def kron_draws(seed: int, index: int, step: Any, shape: tuple, dtype: Any, group: int = 0) -> KronDraws:
    """The draws of param number `index` (its position among the non-None leaves the transform
    updates) of param group number `group` (its position among the groups of one optimizer; a
    transform steps one group) at its step number `step` (1 for its first update): a pure
    function of these, so the draws of any step can be computed from a state (`step` + 1), a
    resumed state draws what an uninterrupted one draws, and a param's draws do not depend on
    the other params (timm draws from one Python stream over all params of all groups). Group 0's
    key is `(seed, index, step)`; another group's folds its index in last. Uniforms in the
    default float dtype (float64 with x64), `V` in `dtype`."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), int(index)), step)
    if int(group) != 0:
        key = jax.random.fold_in(key, int(group))
    k_balance, k_v, k_wd = jax.random.split(key, 3)
    uniform = numerics.float_dtype()
    return KronDraws(jax.random.uniform(k_balance, (), uniform), jax.random.normal(k_v, tuple(shape), dtype),
                     jax.random.uniform(k_wd, (), uniform))


# ------------------------------------------------------------------------------- structure
def safe_flatten_shape(shape: tuple, start_dim: int, end_dim: int) -> tuple:
    """timm's `safe_flatten(t, start_dim, end_dim).shape`: dims `start..end` merged, the shape
    unchanged when the param has too few dims or `start_dim` is past the end dim (both compared
    as timm compares them: `start_dim` as given, `end_dim` made non-negative once, clipped to the
    last dim); otherwise torch's `t.flatten(start_dim, end_dim)`, whose negative dims wrap once
    more, with its IndexError for a dim out of range and its RuntimeError for a start after the
    end (a 0-d tensor flattens to shape (1,))."""
    ndim = len(shape)
    end = min(end_dim if end_dim >= 0 else ndim + end_dim, ndim - 1)
    if ndim <= start_dim or start_dim > end:
        return tuple(shape)
    return _torch_flatten_shape(tuple(shape), start_dim, end)


def _torch_flatten_shape(shape: tuple, start_dim: int, end_dim: int) -> tuple:
    """`torch.flatten(t, start_dim, end_dim).shape`, torch's errors included."""
    ndim = len(shape)
    size = max(ndim, 1)  # torch wraps a 0-d tensor's dims as a 1-d one's

    def wrap(d):
        if not -size <= d <= size - 1:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-size}, {size - 1}], but got {d})")
        return d + size if d < 0 else d

    start, end = wrap(start_dim), wrap(end_dim)
    if start > end:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    if ndim == 0:
        return (1,)
    return (*shape[:start], int(np.prod(shape[start:end + 1], dtype=np.int64)), *shape[end + 1:])


def diagonal_dims(shape: tuple, max_size: int, min_ndim_triangular: int, memory_save_mode: Optional[str], *,
                  name: str = "") -> tuple:
    """timm's `_init_Q_exprs` choice, per dim of `shape`: True where the factor is diagonal
    (size 1, above `max_size`, fewer than `min_ndim_triangular` dims, or `memory_save_mode`).
    `name`: the param, for timm's error for more than 13 dims."""
    if memory_save_mode not in MEMORY_SAVE_MODES:
        raise ValueError(
            f"Invalid memory_save_mode: {memory_save_mode}, must be one of [None, 'one_diag', 'all_diag']")
    if len(shape) == 0:
        return ()
    if len(shape) > 13:
        raise ValueError(f"Got tensor with dim {len(shape)}; Einstein runs out of letters!"
                         + (f" (param {name})" if name else ""))
    dim_diag = [False] * len(shape)
    if memory_save_mode == "one_diag":
        dim_diag[int(np.argsort(shape)[::-1][0])] = True
    elif memory_save_mode == "smart_one_diag":
        sorted_shape = sorted(shape)
        if len(shape) >= 2 and sorted_shape[-1] > sorted_shape[-2]:
            dim_diag[int(np.argsort(shape)[::-1][0])] = True
    elif memory_save_mode == "all_diag":
        dim_diag = [True] * len(shape)
    return tuple(size == 1 or size > max_size or len(shape) < min_ndim_triangular or d
                 for size, d in zip(shape, dim_diag))


def einsum_exprs(shape: tuple, diag: tuple) -> tuple[str, tuple[str, ...], str]:
    """timm's `(exprA, exprGs, exprP)` for a (flattened) gradient of `shape`."""
    if len(shape) == 0:
        return ",->", (",->",), ",,->"
    letters = _LETTERS
    piece1A, piece2A, piece3A = [], "", ""
    exprGs = []
    piece1P, piece2P, piece3P, piece4P = [], [], "", ""
    for i, dim_d in enumerate(diag):
        piece1 = "".join([letters[i + 13] if j == i else letters[j] for j in range(len(shape))])
        if dim_d:
            piece1A.append(letters[i])
            piece2A += letters[i]
            piece3A += letters[i]
            exprGs.append(piece1 + "," + piece1 + "->" + letters[i + 13])
            piece1P.append(letters[i + 13])
            piece2P.append(letters[i + 13])
            piece3P += letters[i + 13]
            piece4P += letters[i + 13]
        else:
            piece1A.append(letters[i] + letters[i + 13])
            piece2A += letters[i + 13]
            piece3A += letters[i]
            piece2 = "".join([letters[i + 26] if j == i else letters[j] for j in range(len(shape))])
            exprGs.append(piece1 + "," + piece2 + "->" + letters[i + 13] + letters[i + 26])
            a, b, c = letters[i], letters[i + 13], letters[i + 26]
            piece1P.append(a + b)
            piece2P.append(a + c)
            piece3P += c
            piece4P += b
    exprA = ",".join(piece1A) + "," + piece2A + "->" + piece3A
    exprP = ",".join(piece1P) + "," + ",".join(piece2P) + "," + piece3P + "->" + piece4P
    return exprA, tuple(exprGs), exprP


def init_q(shape: tuple, diag: tuple, scale: Any, dtype) -> tuple:
    """timm's initial factors: `scale ** (1 / ndim)` (Python's float math for a host `scale`)
    times ones (diagonal) or the identity."""
    if len(shape) == 0:
        s = numerics.scalar(scale, dtype)
        return (jnp.full((), s, dtype),)
    s = numerics.host_or_traced(lambda x: x ** (1 / len(shape)), scale, dtype=dtype)
    return tuple(jnp.full((n,), s, dtype) if d else s * jnp.eye(n, dtype=dtype) for n, d in zip(shape, diag))


# ------------------------------------------------------------------------------- the math
def _einsum(expr: str, *operands):
    return jnp.einsum(expr, *operands, precision=_HIGHEST, optimize="optimal")


def _inf_norm(x: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(x)) if x.size else jnp.zeros((), x.dtype)


def _vector_norm(x: jax.Array) -> jax.Array:
    return lax.sqrt(jnp.sum(lax.mul(x, x)))


def norm_lower_bound(a: jax.Array) -> jax.Array:
    """timm's `_norm_lower_bound`: a cheap lower bound of the spectral norm of a square `a`
    (a power-iteration step from its largest row or column)."""
    max_abs = _inf_norm(a)
    scaled = a / max_abs
    aa = lax.mul(scaled, scaled)
    col, row = jnp.sum(aa, axis=0), jnp.sum(aa, axis=1)
    i, j = jnp.argmax(col), jnp.argmax(row)
    value0, value1 = col[i], row[j]
    x0 = jnp.matmul(scaled[:, i], scaled, precision=_HIGHEST)
    by_col = _vector_norm(jnp.matmul(x0 / _vector_norm(x0), scaled.T, precision=_HIGHEST))
    x1 = jnp.matmul(scaled, scaled[j], precision=_HIGHEST)
    by_row = _vector_norm(jnp.matmul(scaled.T, x1 / _vector_norm(x1), precision=_HIGHEST))
    lb = max_abs * jnp.where(value0 > value1, by_col, by_row)
    return jnp.where(max_abs > 0, lb, max_abs)


def _solve_triangular_right(x: jax.Array, a: jax.Array) -> jax.Array:
    """timm's `X @ inv(A)` for upper-triangular A, in float32 whatever the dtype (as timm's)."""
    dtype = x.dtype
    x32, a32 = x.astype(jnp.float32), a.astype(jnp.float32)
    flat = x32.reshape(-1, x32.shape[-1])
    out = lax.linalg.triangular_solve(a32, flat, left_side=False, lower=False)
    return out.reshape(x32.shape).astype(dtype)


def balance_q(qs: tuple) -> tuple:
    """timm's `_balance_Q`: every factor scaled to the geometric mean of their inf-norms."""
    norms = jnp.stack([_inf_norm(q) for q in qs])
    geometric_mean = jnp.prod(norms) ** numerics.scalar(1 / len(qs), norms.dtype)
    norms = geometric_mean / norms
    return tuple(q * norms[i] for i, q in enumerate(qs))


def update_preconditioner(qs: tuple, exprs: tuple, g: jax.Array, v: jax.Array, precond_lr: Any) -> tuple:
    """timm's preconditioner update of `Kron.step` (`_calc_A_and_conjB`, `_q_terms` and the
    factor updates) for the probe `v`."""
    exprA, exprGs, _ = exprs
    dtype = g.dtype
    A = _einsum(exprA, *qs, g)
    order = g.ndim
    perm = tuple(range(order))
    conjB = jnp.transpose(v, perm[1:] + perm[:1])
    for i, q in enumerate(qs):
        conjB = conjB / q if q.ndim < 2 else _solve_triangular_right(conjB, q)
        if i < order - 1:
            conjB = jnp.swapaxes(conjB, i, order - 1)
    lr = numerics.scalar(precond_lr, dtype)
    tiny = numerics.scalar(_TINY, dtype)
    new = []
    for q, exprG in zip(qs, exprGs):
        term1 = _einsum(exprG, A, A)
        term2 = _einsum(exprG, conjB, conjB)
        tmp = (term1 - term2) * lr
        if q.ndim < 2:
            tmp = tmp * q
            tmp = tmp / (_inf_norm(term1 + term2) + tiny)
        else:
            tmp = jnp.triu(tmp)
            tmp = tmp / (norm_lower_bound(term1 + term2) + tiny)
            tmp = jnp.matmul(tmp, q, precision=_HIGHEST)
        new.append(q - tmp)
    return tuple(new)


def precond_update_prob_schedule(n: Any, max_prob: float = 1.0, min_prob: float = 0.03, decay: float = 0.001,
                                 flat_start: float = 500) -> jax.Array:
    """timm's default preconditioner update probability: `clamp(max_prob * exp(-decay * (n -
    flat_start)), min_prob, max_prob)`, in float32 as timm's (`torch.tensor(n, float32)`):
    1.0 for 500 steps, then annealed to 0.03 by step ~4000."""
    f32 = jnp.float32
    n = jnp.asarray(n).astype(f32)
    prob = numerics.scalar(max_prob, f32) * jnp.exp(numerics.scalar(-decay, f32) * (n - numerics.scalar(flat_start, f32)))
    return jnp.clip(prob, numerics.scalar(min_prob, f32), numerics.scalar(max_prob, f32))


def _do_update(prob: Any, counter: jax.Array) -> jax.Array:
    """timm's `update_counter >= 1 / prob` (counter already incremented): Python's float64 for a
    host probability, timm's float32 tensor `reciprocal` for its schedule's, else the value's dtype."""
    if numerics.is_host_scalar(prob):
        threshold = 1 / float(prob) if float(prob) != 0 else math.inf
        if not math.isfinite(threshold):
            return jnp.zeros((), bool)
        return counter >= math.ceil(threshold)  # an integer counter: exact
    prob = jnp.asarray(numerics.plain(prob))
    dtype = prob.dtype if jnp.issubdtype(prob.dtype, jnp.floating) else numerics.float_dtype()
    prob = prob.astype(dtype)
    return counter.astype(dtype) >= lax.div(jnp.ones((), dtype), prob)


def scale_by_kron(
    lr: ScalarOrSchedule = 0.001,
    momentum: ScalarOrSchedule = 0.9,
    weight_decay: ScalarOrSchedule = 0.0,
    preconditioner_update_probability: Union[None, float, Callable] = None,
    precond_lr: ScalarOrSchedule = 0.1,
    *,
    decay_lr: Any = None,
    max_size_triangular: int = 2048,
    min_ndim_triangular: int = 2,
    memory_save_mode: Optional[str] = None,
    momentum_into_precond_update: bool = True,
    precond_init_scale: float = 1.0,
    mu_dtype: Any = None,
    precond_dtype: Any = None,
    decoupled_decay: bool = False,
    flatten: bool = False,
    flatten_start_dim: int = 2,
    flatten_end_dim: int = -1,
    stochastic_weight_decay: bool = False,
    seed: int = DEFAULT_SEED,
    group: int = 0,
) -> GradientTransformation:
    """timm's Kron step, in `Kron.step`'s order (the block emits the whole step, decay and lr
    included: the stochastic decay is drawn per param):

        g    = flatten(g) (`flatten`);  prob = p_update(step) (default `precond_update_prob_schedule`)
        c   <- c + 1;  update = c >= 1 / prob;  c <- 0 if update;  t <- t + 1
        m   <- beta m + (1 - beta) g  (mu_dtype);   d = (m / (1 - beta^t)) in precond_dtype
        update: balance the factors if u_b < 0.01 (ndim > 1);  A = Q.G (G = d or g), B = V / Q
              (V ~ N(0, 1), triangular solves in float32);  per factor
              Q_i <- Q_i - precond_lr (T1 - T2) Q_i / ||T1 + T2|| (triu and a spectral-norm bound
              for triangular factors; an inf-norm times Q_i for diagonal ones)
        P    = Q^H Q d (in the param's dtype);  P <- P min(1, 1.1 / (rms(P) + 1e-8))
        wd   = 2 u_w wd (stochastic_weight_decay);  p <- p (1 - decay_lr wd) (decoupled) | P <- P + wd p
        p   <- p - lr P

    The random values `u_b`, `V`, `u_w` come from `kron_draws(seed, leaf index, step, ...,
    group)` (timm: Python's `random.Random(1337)` and torch's global generator; `group`: the
    index of the param group this transform steps among one optimizer's groups). Computation in
    the param's dtype (16-bit params too, as timm's), the preconditioner in `precond_dtype`
    (floating dtypes, their names or torch's); `wd` in the uniform's dtype (float64 with x64, as
    timm's Python float), the decoupled `1 - decay_lr wd` too, rounded once to the param's.
    Errors for a param's structure (timm's for more than 13 dims, torch's `flatten` ones) name
    the param (its path, leaf index and shape), at `init` (timm: at its first step).
    """
    mu_dtype = as_dtype(mu_dtype, "mu_dtype", allowed="floating")
    precond_dtype = as_dtype(precond_dtype, "precond_dtype", allowed="floating")
    group = int(group)
    decoupled_decay, flatten = bool(decoupled_decay), bool(flatten)
    stochastic_weight_decay = bool(stochastic_weight_decay)
    momentum_into_precond_update = bool(momentum_into_precond_update)
    max_size, min_ndim = int(max_size_triangular), int(min_ndim_triangular)
    start_dim, end_dim, seed = int(flatten_start_dim), int(flatten_end_dim), int(seed)
    if memory_save_mode not in MEMORY_SAVE_MODES:
        raise ValueError(
            f"Invalid memory_save_mode: {memory_save_mode}, must be one of [None, 'one_diag', 'all_diag']")
    decay_with = lr if decay_lr is None else decay_lr

    def shape_of(p):
        return safe_flatten_shape(tuple(p.shape), start_dim, end_dim) if flatten else tuple(p.shape)

    def own_or(dtype, p):  # (explicit: a NumPy dtype's truth value is not its being given)
        return p.dtype if dtype is None else dtype

    def structure(p, name=""):
        shape = shape_of(p)
        diag = diagonal_dims(shape, max_size, min_ndim, memory_save_mode, name=name)
        return shape, diag, einsum_exprs(shape, diag)

    def check_structures(params):  # each param's structure, its errors naming the param
        leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_none)[0]
        for i, (path, p) in enumerate((path, p) for path, p in leaves if p is not None):
            name = f"{jax.tree_util.keystr(path) or '(the root)'}, leaf {i}, shape {tuple(p.shape)}"
            try:
                structure(p, name)
            except (IndexError, RuntimeError) as error:  # torch's flatten errors
                raise type(error)(f"{error} (param {name})") from None

    def init(params):
        refuse_complex(params, lambda dtype: NotImplementedError(COMPLEX_MESSAGE))
        check_structures(params)

        def q_of(p):
            shape, diag, _ = structure(p)
            qs = init_q(shape, diag, precond_init_scale, own_or(precond_dtype, p))
            # a factor of the param's own shape (a vector's diagonal) takes the param's sharding
            return tuple(lax.add(tree_zeros_like(p, q.dtype), q) if q.shape == tuple(p.shape) else q for q in qs)

        def momentum_like(p):  # the param's sharding where it has the param's shape (not flattened)
            if shape_of(p) == tuple(p.shape):
                return tree_zeros_like(p, own_or(mu_dtype, p))
            return jnp.zeros(shape_of(p), own_or(mu_dtype, p))

        return ScaleByKronState(
            momentum_buffer=map_params(momentum_like, params),
            Q=map_params(q_of, params),
            step=init_counts(params), update_counter=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("timm's Kron needs the params (its step decays them): call update(updates, state, params).")
        refuse_complex(params, lambda dtype: NotImplementedError(COMPLEX_MESSAGE))
        h = hyperparams(state.schedule_count, lr=lr, momentum=momentum, weight_decay=weight_decay,
                        precond_lr=precond_lr, decay_with=decay_with)
        decays = validation.maybe_nonzero(h.weight_decay)

        def counted(counter, t):  # timm: prob from the step before this one, then the counter
            prob = preconditioner_update_probability
            if prob is None:
                prob = precond_update_prob_schedule(t)
            elif callable(prob):
                prob = prob(t)
            counter = numerics.safe_increment(counter)
            return jnp.where(_do_update(prob, counter), jnp.zeros((), counter.dtype), counter)

        new_counter = state.update_counter.map(counted, state.step)
        steps = next_counts(state.step)
        # per non-None leaf: (its index, its step number, whether its preconditioner updates)
        counts = [(i, t, c == 0) for i, (t, c) in enumerate(zip(steps, new_counter))]

        def math(leaf, g, m, qs, p, count):
            i, t, do_update = count
            dtype = p.dtype
            shape, diag, exprs = structure(p)
            g = g.reshape(shape)
            pd = own_or(precond_dtype, g)
            if not p.size:  # an empty param: nothing moves (its factors' terms are zeros)
                return jnp.zeros(p.shape, numerics.compute_dtype(dtype)), m, tuple(qs)
            # momentum in its dtype (torch's in-place ops compute in the wider dtype), debiased by
            # timm's Python float `1 - beta ** step`
            m_dtype = m.dtype
            # (a 16-bit buffer: torch computes in float32 with float32 scalars, then rounds once)
            wide = numerics.compute_dtype(jnp.promote_types(m_dtype, g.dtype))
            m = numerics.cast(lax.mul(numerics.cast(m, wide), numerics.scalar(h.momentum, wide)), m_dtype)
            m = numerics.cast(lax.add(numerics.cast(m, wide), lax.mul(numerics.cast(g, wide),
                                                                      numerics.one_minus(h.momentum, wide))), m_dtype)
            m_compute = numerics.compute_dtype(m_dtype)
            bc = numerics.bias_correction(h.momentum, t, m_compute)
            debiased = numerics.cast(numerics.cast(lax.div(numerics.cast(m, m_compute), bc), m_dtype), pd)
            draws = kron_draws(seed, i, t, shape, pd, group)

            def precondition(qs):
                if len(shape) > 1:
                    qs = _branch(draws.balance < _BALANCE_PROB, balance_q, qs)
                big_g = debiased if momentum_into_precond_update else numerics.cast(g, pd)
                return update_preconditioner(qs, exprs, big_g, kron_draws(seed, i, t, shape, pd, group).V, h.precond_lr)

            qs = _branch(do_update, precondition, tuple(qs))
            # each torch op on the param-dtype tensors computes in `cd` (float32 for 16-bit params,
            # with float32 scalars) and rounds once to the param's dtype
            cd = numerics.compute_dtype(dtype)

            def op(x):
                return numerics.cast(x, dtype)

            def up(x):
                return numerics.cast(x, cd)

            pre = op(_einsum(exprs[-1], *qs, *qs, debiased))
            rms = op(lax.sqrt(up(jnp.mean(op(lax.mul(up(pre), up(pre)))))))
            # timm's `1.1 / (rms + 1e-8)`: Tensor.__rtruediv__ is `reciprocal() * 1.1`, two roundings
            shifted = op(lax.add(up(rms), numerics.scalar(1e-8, cd)))
            factor = op(lax.mul(up(op(lax.div(jnp.ones((), cd), up(shifted)))), numerics.scalar(1.1, cd)))
            factor = jnp.minimum(factor, jnp.ones((), dtype))
            pre = op(lax.mul(up(pre), up(factor))).reshape(p.shape)
            moved = up(p)
            if decays:
                wd = h.weight_decay
                keep_dtype = cd
                if stochastic_weight_decay:  # timm's Python float `2 * rng.random() * wd`
                    u = draws.weight_decay
                    wd = lax.mul(lax.mul(numerics.scalar(2.0, u.dtype), u), numerics.scalar(wd, u.dtype))
                    keep_dtype = jnp.promote_types(u.dtype, cd)  # timm's float `1. - lr * wd` (float64 with x64)
                if decoupled_decay:  # p.mul_(keep), written p - (1 - keep) p: an FMA cannot skip its rounding
                    keep = numerics.cast(decoupled_decay_keep(h.decay_with, wd, keep_dtype), cd)
                    moved = up(op(lax.sub(moved, lax.mul(1 - keep, moved))))
                else:
                    pre = op(lax.add(up(pre), lax.mul(up(p), numerics.scalar(wd, cd))))
            # p.add_(P, alpha=-lr): 16-bit params in float32, rounded once (the update's dtype)
            new_p = lax.sub(moved, lax.mul(numerics.scalar(h.lr, cd), up(pre)))
            return lax.sub(new_p, numerics.cast(p, cd)), m, qs

        new_updates, new_state = per_param_update(
            state, updates, math, buffers=("momentum_buffer", "Q"), inputs=(params,), reference=params,
            counts=counts, views=False)
        return new_updates, new_state._replace(
            update_counter=select_present(new_counter, state.update_counter, updates, params))

    return GradientTransformation(init, update)


def _branch(condition: Any, fn: Callable, operand: Any) -> Any:
    """`fn(operand)` where `condition` holds, else `operand`: a `lax.cond` while tracing; a
    Python `if` on a concrete condition (an un-jitted update: XLA:CPU crashed compiling some
    stand-alone conds of this step op by op, tests/test_properties.py's eager runs)."""
    if isinstance(condition, jax_core.Tracer):
        return lax.cond(condition, fn, lambda x: x, operand)
    return fn(operand) if bool(condition) else operand


# ------------------------------------------------------------------------------- the reference
class _QueuedRandom:
    """Stands in for timm Kron's `self.rng` (Python's `random.Random`): `random()` returns the
    queued uniforms in the reference's call order, `randint` a dummy seed (the probe itself is
    replaced); `getstate` / `setstate` keep a real generator's state for timm's state dict."""

    def __init__(self):
        import random

        self.queue: list = []
        self.current = None
        self._state = random.Random(DEFAULT_SEED)

    def random(self) -> float:
        value, self.current = self.queue.pop(0)
        return value

    def randint(self, a: int, b: int) -> int:
        return a

    def getstate(self):
        return self._state.getstate()

    def setstate(self, state) -> None:
        self._state.setstate(state)


def drive_reference(optimizer: Any, seed: int = DEFAULT_SEED) -> Any:
    """Makes a `timm.optim.Kron` instance draw what `scale_by_kron(seed=seed)` draws (for parity
    tests: the record's `draws`): each of its steps takes its balance and stochastic-decay
    uniforms from a queue of `kron_draws` values (its `self.rng`) and its probes from
    `kron_draws(...).V` (`torch.randn` while it steps), for param number `i` of its group number
    `g` (its position in `param_groups`) at its step `t`: the leaf index, step and group ours
    uses (`scale_by_kron(group=g)`, which the adapter class and `param_groups` pass per group:
    the factory's `param_group`). Also sets the instance's `torch.compile`d helpers
    to timm's plain functions (inductor compiles each shape for seconds; eager is the same math).
    Returns the optimizer."""
    import sys

    import torch

    from optax_like.interop.torch import _tensor

    module = sys.modules[type(optimizer).__module__]
    for name in ("_calc_A_and_conjB", "_q_terms", "_precond_grad", "_balance_Q"):
        setattr(optimizer, name, getattr(module, name))
    stub = _QueuedRandom()
    optimizer.rng = stub
    step = optimizer.step
    probes: dict = {}

    def randn(*size, generator=None, dtype=None, device=None, **kwargs):
        i, t, shape, dt, g = probes[stub.current]
        v = kron_draws(seed, i, t, shape, dt, g).V
        out = _tensor(np.asarray(v))
        assert tuple(out.shape) == tuple(size[0] if len(size) == 1 else size) and out.dtype == dtype
        return out

    def driven_step(closure=None):
        stub.queue, probes_now = [], {}
        for g, group in enumerate(optimizer.param_groups):
            stochastic = group["stochastic_weight_decay"] and group["weight_decay"] != 0
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                t = int(optimizer.state.get(p, {}).get("step", 0)) + 1
                shape = tuple(p.grad.shape)
                if group["flatten"]:
                    shape = safe_flatten_shape(shape, group["flatten_start_dim"], group["flatten_end_dim"])
                dtype = group.get("precond_dtype")  # timm's `precond_dtype or grad.dtype`
                dt = as_dtype(p.grad.dtype if dtype is None else dtype, "precond_dtype")
                draws = kron_draws(seed, i, t, shape, dt, g)
                key = (g, i)
                probes_now[key] = (i, t, shape, dt, g)
                stub.queue.append((float(draws.balance), key))
                if stochastic:
                    stub.queue.append((float(draws.weight_decay), key))
        probes.clear()
        probes.update(probes_now)
        real = torch.randn
        torch.randn = randn
        try:
            return step(closure)
        finally:
            torch.randn = real
            assert not stub.queue, "timm's Kron drew fewer uniforms than queued"

    optimizer.step = driven_step
    return optimizer


__all__ = ["DEFAULT_SEED", "KronDraws", "ScaleByKronState", "balance_q", "diagonal_dims", "drive_reference", "einsum_exprs", "init_q",
           "kron_draws", "norm_lower_bound", "precond_update_prob_schedule", "safe_flatten_shape", "scale_by_kron",
           "update_preconditioner"]
