"""torch.optim.LBFGS's strong-Wolfe line search (`_strong_wolfe`, `_cubic_interpolate`), jittable.

torch's `_strong_wolfe` is a Python loop that calls the objective between decisions. Here it is
a *step machine*: `strong_wolfe_init` sets up a search and names the first trial step
(`state.t`); after the caller evaluates the objective at `x + state.t * d`,
`strong_wolfe_absorb` consumes `(f_new, g_new, gtd_new)` and either names the next trial step or
sets `state.finished`; `strong_wolfe_result` then gives torch's return values `(f, g, t)`.
Every decision, every comparison and the order of the arithmetic are torch's (ported from
torch/optim/lbfgs.py, itself a port of minFunc's `lswolfe.lua`), including the `ls_iter > 1`
test of the bracketing phase, the `insuf_progress` rule of the zoom phase, the re-sorting of the
bracket only after an Armijo failure, and the `max_ls` fallback bracket `[0, t]`.

The machine lets L-BFGS run all of a `step()` (iterations and line-search evaluations) in one
`lax.while_loop` that traces the objective once. `strong_wolfe` wraps it in its own
`while_loop` for standalone use; it is torch's `_strong_wolfe(obj_func, x, t, d, f, g, gtd, c1,
c2, tolerance_change, max_ls)` with the same return values.

Python's two-argument `min`/`max` (which torch uses on scalars) are reproduced exactly,
including which argument wins on ties and NaN (`py_min`, `py_max`). So are torch's roundings:
its losses are Python floats (`three_times_difference`), a Python float divided by a tensor is
a reciprocal times the float, and every product is rounded before it is added (`rounded` keeps
XLA from fusing them into an FMA). Where torch keeps a step as a Python float (`lr`, and bounds
computed from it such as `min_step = 1.01`), torch's float64 value is rounded here.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "StrongWolfeState",
    "cubic_interpolate",
    "py_max",
    "py_min",
    "rounded",
    "strong_wolfe",
    "strong_wolfe_absorb",
    "strong_wolfe_init",
    "strong_wolfe_result",
]


def py_max(a, b):
    """Python's `max(a, b)`: `b` only if `b > a` (so NaN in `b` loses, NaN in `a` wins)."""
    return jnp.where(b > a, b, a)


def py_min(a, b):
    """Python's `min(a, b)`: `b` only if `b < a`."""
    return jnp.where(b < a, b, a)


def rounded(x):
    """`x`, rounded to its dtype before any later add: a barrier against FMA contraction.

    Under jit XLA contracts a multiply feeding an add (`a + b * c`) into one fused multiply-add
    where it fuses them, which skips the rounding of `b * c`. torch's line search runs each
    operation on a 0-d tensor separately (every product rounded), so its products are wrapped
    here. A select cannot be contracted through (`where(x == x, x, nan)` keeps every value and
    every NaN a NaN), where XLA folds `reduce_precision` and moves across optimization barriers.
    """
    return jnp.where(x == x, x, jnp.nan)


def _two_sum(a, b):
    """(a + b rounded, its exact rounding error)."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


def three_times_difference(f1, f2):
    """torch's `3 * (f1 - f2)` of two losses, as it enters a float32 computation.

    torch keeps losses as Python floats: for float32 losses the difference and its triple are
    exact in float64, and the value is rounded to float32 once, where it meets a tensor. Here
    the exact value is carried as float32 pieces (`f1 - f2 = s + e` and `3 s = p + pe`, both
    exact) and rounded once at the end (correct unless within ~2^-22 ulp of a tie). float64
    losses are Python's own arithmetic: `3 * (f1 - f2)`, two roundings.
    """
    if jnp.result_type(f1, f2) == jnp.float64:
        return 3 * (f1 - f2)
    s, e = _two_sum(f1, -f2)
    p, pe = _two_sum(2 * s, s)
    return p + (pe + rounded(3 * e))


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch's `_cubic_interpolate`: minimizer of the cubic through two points with slopes.

        d1 = g1 + g2 - 3 (f1 - f2) / (x1 - x2);   d2 = sqrt(d1^2 - g1 g2)
        min_pos = x2 - (x2 - x1) (g2 + d2 - d1) / (g2 - g1 + 2 d2)     (x1 <= x2; mirrored else)
        return min(max(min_pos, lo), hi)      if d1^2 - g1 g2 >= 0 else (lo + hi) / 2

    `bounds=(lo, hi)`, default the sorted pair `(x1, x2)`. torch's operation order and roundings:
    the losses are Python floats (`three_times_difference`); `3 * (f1 - f2) / (x1 - x2)` divides
    a Python float by a tensor, which torch computes as `(x1 - x2).reciprocal() * (3 * (f1 - f2))`;
    `d1 ** 2` is `d1 * d1`; every product is rounded before it is added (`rounded`). Measured on
    random float32 and float64 brackets: torch's result bit for bit except where torch's sqrt
    (MKL's vector math, dispatch-dependent) is not correctly rounded (~0.5% of float32 and ~1% of
    float64 inputs on this AVX-512 machine), where XLA's sqrt is. When x1 and x2 are both Python
    numbers (t_prev = 0 and t = lr at torch's first extrapolation), torch divides in float64: the
    same result for lr = 1.
    """
    le = x1 <= x2
    if bounds is None:
        xmin_bound = jnp.where(le, x1, x2)
        xmax_bound = jnp.where(le, x2, x1)
    else:
        xmin_bound, xmax_bound = bounds
    slope = rounded((1 / (x1 - x2)) * three_times_difference(f1, f2))
    d1 = g1 + g2 - slope
    d2_square = rounded(d1 * d1) - rounded(g1 * g2)
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
    min_pos = jnp.where(
        le,
        x2 - rounded((x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))),
        x1 - rounded((x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))),
    )
    clipped = py_min(py_max(min_pos, xmin_bound), xmax_bound)
    return jnp.where(real, clipped, (xmin_bound + xmax_bound) / 2.0)


class StrongWolfeState(NamedTuple):
    """One strong-Wolfe search in progress (names follow torch's locals)."""

    f: jax.Array  # loss at t = 0
    g: jax.Array  # gradient at t = 0 (flat)
    gtd: jax.Array  # g . d at t = 0
    d_norm: jax.Array  # max |d|
    max_ls: jax.Array  # int32
    t: jax.Array  # the next trial step (once finished: the accepted step)
    t_prev: jax.Array
    f_prev: jax.Array
    g_prev: jax.Array
    gtd_prev: jax.Array
    ls_iter: jax.Array  # int32
    ls_func_evals: jax.Array  # int32
    bracket: jax.Array  # (2,)
    bracket_f: jax.Array  # (2,)
    bracket_g: jax.Array  # (2, n)
    bracket_gtd: jax.Array  # (2,)
    low_pos: jax.Array  # int32; high_pos = 1 - low_pos
    insuf_progress: jax.Array  # bool
    done: jax.Array  # bool: torch's `done` (Wolfe conditions met)
    zoom: jax.Array  # bool: the pending evaluation belongs to the zoom phase
    finished: jax.Array  # bool: the search is over, `strong_wolfe_result` is valid


def strong_wolfe_init(t, d, f, g, gtd, max_ls=25) -> StrongWolfeState:
    """Starts a search from loss `f`, gradient `g`, slope `gtd` along `d`; first trial is `t`."""
    dtype = g.dtype
    scalar = lambda v: jnp.asarray(v, dtype)
    zero = jnp.zeros((), dtype)
    return StrongWolfeState(
        f=scalar(f),
        g=g,
        gtd=scalar(gtd),
        d_norm=jnp.max(jnp.abs(d)),
        max_ls=jnp.asarray(max_ls, jnp.int32),
        t=scalar(t),
        t_prev=zero,
        f_prev=scalar(f),
        g_prev=g,
        gtd_prev=scalar(gtd),
        ls_iter=jnp.zeros((), jnp.int32),
        ls_func_evals=jnp.zeros((), jnp.int32),
        bracket=jnp.zeros((2,), dtype),
        bracket_f=jnp.zeros((2,), dtype),
        bracket_g=jnp.zeros((2,) + g.shape, dtype),
        bracket_gtd=jnp.zeros((2,), dtype),
        low_pos=jnp.zeros((), jnp.int32),
        insuf_progress=jnp.zeros((), bool),
        done=jnp.zeros((), bool),
        zoom=jnp.zeros((), bool),
        finished=jnp.zeros((), bool),
    )


def _sort_low(bracket_f):
    """torch's `low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)`."""
    return jnp.where(bracket_f[0] <= bracket_f[1], 0, 1).astype(jnp.int32)


def _zoom_decide(s: StrongWolfeState, tolerance_change) -> StrongWolfeState:
    """The head of torch's zoom loop: stop, or pick the next trial step (with insuf_progress)."""
    width_small = jnp.abs(s.bracket[1] - s.bracket[0]) * s.d_norm < tolerance_change
    stop = s.done | (s.ls_iter >= s.max_ls) | width_small

    def finish(s):
        return s._replace(finished=jnp.ones((), bool))

    def next_trial(s):
        b = s.bracket
        t = cubic_interpolate(b[0], s.bracket_f[0], s.bracket_gtd[0], b[1], s.bracket_f[1], s.bracket_gtd[1])
        b_max = py_max(b[0], b[1])
        b_min = py_min(b[0], b[1])
        eps = 0.1 * (b_max - b_min)
        near = py_min(b_max - t, t - b_min) < eps
        move = s.insuf_progress | (t >= b_max) | (t <= b_min)
        moved_t = jnp.where(jnp.abs(t - b_max) < jnp.abs(t - b_min), b_max - eps, b_min + eps)
        t = jnp.where(near & move, moved_t, t)
        insuf = near & ~move
        return s._replace(t=t, insuf_progress=insuf, ls_iter=s.ls_iter + 1, zoom=jnp.ones((), bool))

    return lax.cond(stop, finish, next_trial, s)


def _bracket_absorb(s: StrongWolfeState, f_new, g_new, gtd_new, c1, c2, tolerance_change):
    t = s.t
    in_loop = s.ls_iter < s.max_ls
    armijo = (f_new > (s.f + rounded(c1 * t * s.gtd))) | ((s.ls_iter > 1) & (f_new >= s.f_prev))
    wolfe = jnp.abs(gtd_new) <= -c2 * s.gtd
    positive = gtd_new >= 0
    # 0: bracket [t_prev, t]; 1: Wolfe point [t]; 2: keep extrapolating; 3: max_ls reached
    case = jnp.where(
        ~in_loop, 3, jnp.where(armijo, 0, jnp.where(wolfe, 1, jnp.where(positive, 0, 2)))
    )

    def bracket_prev(s):
        s = s._replace(
            bracket=jnp.stack([s.t_prev, t]),
            bracket_f=jnp.stack([s.f_prev, f_new]),
            bracket_g=jnp.stack([s.g_prev, g_new]),
            bracket_gtd=jnp.stack([s.gtd_prev, gtd_new]),
        )
        return _start_zoom(s)

    def wolfe_point(s):
        s = s._replace(
            bracket=jnp.stack([t, t]),
            bracket_f=jnp.stack([f_new, f_new]),
            bracket_g=jnp.stack([g_new, g_new]),
            bracket_gtd=jnp.stack([gtd_new, gtd_new]),
            done=jnp.ones((), bool),
        )
        return _start_zoom(s)

    def extrapolate(s):
        min_step = t + rounded(0.01 * (t - s.t_prev))
        max_step = t * 10
        t_next = cubic_interpolate(s.t_prev, s.f_prev, s.gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        return s._replace(t=t_next, t_prev=t, f_prev=f_new, g_prev=g_new, gtd_prev=gtd_new, ls_iter=s.ls_iter + 1)

    def max_ls_reached(s):
        # torch leaves bracket_gtd unset here; the zoom loop never reads it (ls_iter == max_ls).
        s = s._replace(
            bracket=jnp.stack([jnp.zeros_like(t), t]),
            bracket_f=jnp.stack([s.f, f_new]),
            bracket_g=jnp.stack([s.g, g_new]),
            bracket_gtd=jnp.stack([s.gtd, gtd_new]),
        )
        return _start_zoom(s)

    def _start_zoom(s):
        s = s._replace(low_pos=_sort_low(s.bracket_f), insuf_progress=jnp.zeros((), bool))
        return _zoom_decide(s, tolerance_change)

    return lax.switch(case, [bracket_prev, wolfe_point, extrapolate, max_ls_reached], s)


def _zoom_absorb(s: StrongWolfeState, f_new, g_new, gtd_new, c1, c2, tolerance_change):
    t = s.t
    low, high = s.low_pos, 1 - s.low_pos
    armijo_fail = (f_new > (s.f + rounded(c1 * t * s.gtd))) | (f_new >= s.bracket_f[low])

    def set_at(s, pos, t_, f_, g_, gtd_):
        return s._replace(
            bracket=s.bracket.at[pos].set(t_),
            bracket_f=s.bracket_f.at[pos].set(f_),
            bracket_g=s.bracket_g.at[pos].set(g_),
            bracket_gtd=s.bracket_gtd.at[pos].set(gtd_),
        )

    def new_high(s):
        s = set_at(s, high, t, f_new, g_new, gtd_new)
        return s._replace(low_pos=_sort_low(s.bracket_f))

    def new_low(s):
        wolfe = jnp.abs(gtd_new) <= -c2 * s.gtd
        flip = ~wolfe & (gtd_new * (s.bracket[high] - s.bracket[low]) >= 0)
        # old high becomes new low (only the high slot changes, so the row copy is a select)
        s = s._replace(
            bracket=s.bracket.at[high].set(jnp.where(flip, s.bracket[low], s.bracket[high])),
            bracket_f=s.bracket_f.at[high].set(jnp.where(flip, s.bracket_f[low], s.bracket_f[high])),
            bracket_g=s.bracket_g.at[high].set(jnp.where(flip, s.bracket_g[low], s.bracket_g[high])),
            bracket_gtd=s.bracket_gtd.at[high].set(jnp.where(flip, s.bracket_gtd[low], s.bracket_gtd[high])),
            done=s.done | wolfe,
        )
        return set_at(s, low, t, f_new, g_new, gtd_new)

    s = lax.cond(armijo_fail, new_high, new_low, s)
    return _zoom_decide(s, tolerance_change)


def strong_wolfe_absorb(s: StrongWolfeState, f_new, g_new, gtd_new, c1=1e-4, c2=0.9, tolerance_change: Any = 1e-9):
    """Consumes the evaluation at `x + s.t * d`; names the next trial or sets `finished`."""
    dtype = s.g.dtype
    f_new = jnp.asarray(f_new, dtype)
    gtd_new = jnp.asarray(gtd_new, dtype)
    c1 = jnp.asarray(c1, dtype)
    c2 = jnp.asarray(c2, dtype)
    tolerance_change = jnp.asarray(tolerance_change, dtype)
    s = s._replace(ls_func_evals=s.ls_func_evals + 1)
    args = (f_new, g_new, gtd_new, c1, c2, tolerance_change)
    return lax.cond(
        s.zoom,
        lambda s: _zoom_absorb(s, *args),
        lambda s: _bracket_absorb(s, *args),
        s,
    )


def strong_wolfe_result(s: StrongWolfeState):
    """torch's return values `(f_new, g_new, t)`: the low end of the final bracket."""
    low = s.low_pos
    return s.bracket_f[low], s.bracket_g[low], s.bracket[low]


def strong_wolfe(
    obj_func: Callable,
    x,
    t,
    d,
    f,
    g,
    gtd,
    c1=1e-4,
    c2=0.9,
    tolerance_change=1e-9,
    max_ls=25,
):
    """torch's `_strong_wolfe`, in one `lax.while_loop`: returns `(f_new, g_new, t, ls_func_evals)`.

    `obj_func(x, t, d) -> (loss, flat_grad)` evaluates at `x + t * d`. `max_ls` must be >= 0
    (torch fails with an UnboundLocalError for a negative `max_ls`).
    """
    dtype = g.dtype
    state = strong_wolfe_init(t, d, f, g, gtd, max_ls)

    def body(s):
        f_new, g_new = obj_func(x, s.t, d)
        g_new = jnp.asarray(g_new, dtype)
        return strong_wolfe_absorb(s, f_new, g_new, jnp.dot(g_new, d), c1, c2, tolerance_change)

    state = lax.while_loop(lambda s: ~s.finished, body, state)
    f_new, g_new, t_new = strong_wolfe_result(state)
    return f_new, g_new, t_new, state.ls_func_evals
