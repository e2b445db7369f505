"""`scale_by_schedule_free`: schedulefree 1.4.1's AdamW, SGD and RAdam steps (Defazio et al., 2024,
"The Road Less Scheduled"), and the eval/train views of the params (`.eval()`, `.train()`).

schedulefree computes its averaging coefficient on the host in float64 every step:

    weight     = (k + 1)**r * lr_max**weight_lr_power
    weight_sum = weight_sum + weight          (a Python float accumulated over the whole run)
    ckp1       = weight / weight_sum

and hands `ckp1`, `lr` and `lr * (beta1 * (1 - ckp1) - 1)` to float32/float64 tensor ops, where
each is rounded once to the tensor's dtype. Our step is traced and x64 is normally off, so the
host math is reproduced with `_Wide` numbers: plain float64 under x64, else exact double-float
pairs `(hi, lo)` of float32 (TwoSum / Dekker products, ~2**-46 relative), rounded once to the
param's dtype at the end. The running `weight_sum` and `lr_max` are stored as such pairs
(`weight_sum` + `weight_sum_lo`), so they do not drift: a float32 running sum would drift by
~k * 6e-8 relative, which after 10k steps moves `ckp1` by thousands of its ulps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule, apply_updates
from optax_like.core.leaf_scalars import LeafScalars, increment_counts, init_counts
from optax_like.core.torch_layout import STARTED, STEPS_TAKEN, GroupEntries, declare_torch_state, host_array
from optax_like.core.tree import is_none
from optax_like.core.tree import zeros_like as tree_zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update

_F32 = jnp.dtype(jnp.float32)


# --------------------------------------------------------------------------- wide scalars
class _Host:
    """A wide number whose float64 value is known while tracing (a hyperparameter given as a
    Python number, or host math on such numbers). `_Wide` computes an operation on two of them
    on the host, in float64 (Python's own float arithmetic: schedulefree's numbers exactly),
    skips a product by 1, and makes the `(hi, lo)` pair (`pair`, indexable as one) only where
    a traced number meets it: the traced step holds only the arithmetic that depends on the
    step (schedule-free AdamW's one-leaf step: 27 -> 24 fusions, 1540 -> 1311 HLO lines)."""

    __slots__ = ("value", "_wide", "_pair")

    def __init__(self, value: Any, wide: "_Wide"):
        self.value = np.float64(value)
        self._wide = wide
        self._pair = None

    def pair(self):
        if self._pair is None:
            self._pair = self._wide.pair_of(self.value)
        return self._pair

    def __getitem__(self, index):
        return self.pair()[index]

    def __iter__(self):
        return iter(self.pair())


class _Wide:
    """Scalar arithmetic standing in for Python's float64 host math inside a traced step.

    A number is a pair `(hi, lo)`: under x64 `hi` is a float64 array and `lo` is 0 (plain
    float64 arithmetic, torch's own numbers); otherwise both are float32 and `hi + lo` is a
    double-float, normalised (`|lo| <= ulp(hi) / 2`), so `hi` is the value rounded to float32.
    Dekker's products split operands by masking their low 12 bits, so every partial product
    is exact and an FMA contraction by XLA changes nothing; the rounded product itself goes
    through a select XLA cannot contract into the add that follows. A number known on the host
    is a `_Host` (its float64 value; operations on two of them are done on the host).
    """

    def __init__(self):
        self.x64 = numerics.float_dtype() == jnp.dtype(jnp.float64)
        self.dtype = numerics.float_dtype()

    # construction
    def host(self, value: float) -> _Host:
        return _Host(value, self)

    def pair_of(self, value: np.float64):
        """The traced `(hi, lo)` pair of a float64 value."""
        if self.x64:
            return jnp.asarray(value, jnp.float64), jnp.zeros((), jnp.float64)
        hi = np.float32(value)
        # Behind a barrier: XLA's simplifier folds `(x + C) - C` to `x` for constants C,
        # which erases TwoSum's error term.
        return lax.optimization_barrier((jnp.asarray(hi), jnp.asarray(np.float32(value - np.float64(hi)))))

    def of(self, x: Any):
        """A hyperparameter (host number, traced scalar or `PreciseScalar`) as a wide number.
        A traced value is taken as it is (without x64: a float32, so a traced lr is the float32
        nearest the user's Python float; a host number keeps its float64 value). A
        `PreciseScalar` (the adapter's betas) of 0.5 or more is `1 - (1 - x)` from its carried
        `1 - x` (exact as a pair): within ~2**-26 of the float64 x, where float32(x) is within
        2**-25 (0.999: 6e-11 against 6e-8, which `1 - beta2**t` would turn into a 6e-5 relative
        error at the first step, against the moment's exactly rounded `1 - beta2`)."""
        if isinstance(x, numerics.PreciseScalar) and not self.x64:
            value = jnp.asarray(x.value).astype(self.dtype)
            near_one = self.sub(self.host(1.0), (jnp.asarray(x.one_minus_value).astype(self.dtype),
                                                  jnp.zeros((), self.dtype)))
            return self.where(value >= 0.5, near_one, (value, jnp.zeros((), self.dtype)))
        x = numerics.plain(x)
        if numerics.is_host_scalar(x):
            return self.host(float(x))
        x = jnp.asarray(x).astype(self.dtype)
        return x, jnp.zeros((), self.dtype)

    def integer(self, n: jax.Array):
        """An int32 count, exactly."""
        if self.x64:
            return n.astype(jnp.float64), jnp.zeros((), jnp.float64)
        hi = n.astype(_F32)
        return hi, (n - hi.astype(jnp.int32)).astype(_F32)

    @staticmethod
    def _hosts(*xs) -> bool:
        return all(isinstance(x, _Host) for x in xs)

    @staticmethod
    def _is(x, value: float) -> bool:
        return isinstance(x, _Host) and x.value == value

    def _folded(self, fn, *xs) -> _Host:
        with np.errstate(all="ignore"):  # inf and nan as float64 arithmetic gives them
            return self.host(fn(*(x.value for x in xs)))

    # arithmetic
    @staticmethod
    def _two_sum(a, b):
        s = a + b
        bb = s - a
        return s, (a - (s - bb)) + (b - bb)

    @staticmethod
    def _quick(a, b):
        s = a + b
        return s, b - (s - a)

    @staticmethod
    def _split(a):
        hi = lax.bitcast_convert_type(lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000), _F32)
        return hi, a - hi

    def _two_prod(self, a, b):
        p = _rounded_product(a, b)  # else XLA contracts `p + e` into fma(a, b, e) and loses e
        ah, al = self._split(a)
        bh, bl = self._split(b)
        return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl

    def add(self, x, y):
        if self._hosts(x, y):
            return self._folded(np.add, x, y)
        if self.x64:
            return x[0] + y[0], x[1]
        s, e = self._two_sum(x[0], y[0])
        return self._quick(s, e + (x[1] + y[1]))

    def neg(self, x):
        if isinstance(x, _Host):
            return self.host(-x.value)
        return -x[0], -x[1]

    def sub(self, x, y):
        return self.add(x, self.neg(y))

    def mul(self, x, y):
        if self._hosts(x, y):
            return self._folded(np.multiply, x, y)
        if self._is(x, 1.0) or self._is(y, 1.0):  # exact: 1 * (hi, lo) is (hi, lo)
            return y if self._is(x, 1.0) else x
        if self.x64:
            return x[0] * y[0], x[1]
        p, e = self._two_prod(x[0], y[0])
        return self._quick(p, e + (x[0] * y[1] + x[1] * y[0]))

    def div(self, x, y):
        if self._hosts(x, y):
            return self._folded(np.divide, x, y)
        if self.x64:
            return x[0] / y[0], x[1]
        q1 = x[0] / y[0]
        rest = self.sub(x, self.mul(y, (q1, jnp.zeros_like(q1))))
        q2 = (rest[0] + rest[1]) / y[0]
        return self._quick(q1, q2)

    def power(self, x, exponent: Any):
        """`x ** exponent`: wide for a non-negative integer or half-integer host exponent, else
        `pow` in the widest float (float32 without x64: ~1 ulp of float32 in the weight)."""
        e = numerics.plain(exponent)
        if numerics.is_host_scalar(e) and isinstance(x, _Host):
            return self._folded(lambda v: v ** np.float64(float(e)), x)
        if numerics.is_host_scalar(e) and float(e) != int(e) and float(2 * e) == int(2 * e) and 0 < e <= 32:
            return self.sqrt(self.power(x, int(2 * e)))  # half-integer powers (r=0.5) stay exact
        if numerics.is_host_scalar(e) and float(e) == int(e) and 0 <= int(e) <= 64:
            n = int(e)
            out, base = self.host(1.0), x
            while n:
                if n & 1:
                    out = self.mul(out, base)
                n >>= 1
                if n:
                    base = self.mul(base, base)
            return out
        value = jnp.power(x[0] + x[1], numerics.scalar(e, self.dtype) if numerics.is_host_scalar(e)
                          else jnp.asarray(e).astype(self.dtype))
        return value, jnp.zeros_like(value)

    def sqrt(self, x):
        """The square root (wide; one Newton correction of float32's correctly rounded sqrt)."""
        if isinstance(x, _Host):
            return self._folded(np.sqrt, x)
        if self.x64:
            return jnp.sqrt(x[0]), x[1]
        root = jnp.sqrt(x[0])
        p, e = self._two_prod(root, root)
        rest = ((x[0] - p) - e) + x[1]
        positive = root > 0
        correction = jnp.where(positive, rest / jnp.where(positive, 2 * root, 1), 0)
        return self._quick(root, correction.astype(root.dtype))

    def power_count(self, x, n: jax.Array):
        """`x ** n` for a traced non-negative int32 count `n`: binary powering in wide
        arithmetic (~62 rounded products, ~1e-12 relative without x64)."""
        if self.x64:
            return jnp.power(x[0], n.astype(jnp.float64)), x[1]
        out, _, _ = lax.fori_loop(0, 31, _power_step, (tuple(self.host(1.0)), tuple(x), n))
        return out

    def where(self, cond, x, y):
        if isinstance(cond, (bool, np.bool_)):
            return x if cond else y
        return jnp.where(cond, x[0], y[0]), jnp.where(cond, x[1], y[1])

    def greater(self, x, y):
        if self._hosts(x, y):
            return bool(x.value > y.value)
        return (x[0] > y[0]) | ((x[0] == y[0]) & (x[1] > y[1]))

    def is_zero(self, x):
        if isinstance(x, _Host):
            return bool(x.value == 0)
        return (x[0] == 0) & (x[1] == 0)

    def rounded(self, x, dtype):
        """The value rounded once to `dtype` (as torch rounds a Python scalar into a tensor op)."""
        if isinstance(x, _Host):  # (through float32 without x64, as the pair's hi)
            return jnp.asarray(np.float64(x.value) if self.x64 else np.float32(x.value)).astype(dtype)
        if self.x64:
            return x[0].astype(dtype)
        if jnp.dtype(dtype) == _F32:
            return x[0]
        return (x[0].astype(jnp.float64) if jnp.dtype(dtype) == jnp.dtype(jnp.float64) else x[0]).astype(dtype)


def _power_step(_, carry):
    """One step of `_Wide.power_count`'s binary powering (module level: an eager `fori_loop`
    with the same body function reuses its compiled loop)."""
    wide = _Wide()
    out, base, m = carry
    odd = (m & 1) == 1
    out = wide.where(odd, wide.mul(out, base), out)
    return out, wide.mul(base, base), m >> 1


def _computed_once(scalars: tuple, step: jax.Array) -> tuple:
    """The step scalars, each divided by a traced 1 (`step > 0`, true for every step count):
    exactly themselves, but the division is an op XLA's fusion does not duplicate into several
    kernels, so the double-float chains behind them (~100 scalar ops each) are computed once per
    step instead of being copied into every leaf's kernels. A plain scalar has nothing to stop
    it: XLA fuses it into each consumer, and every distinct leaf kernel compiles the whole chain
    again (benchmarks/all_optimizers.py's tree: 30% more compiled HLO; the same bits either way,
    a division by 1 being exact)."""
    one = lax.gt(step, jnp.zeros((), step.dtype))
    return tuple(lax.div(s, lax.convert_element_type(one, s.dtype)) for s in scalars)


# --------------------------------------------------------------------------- per-element ops
def _rounded_product(a, b):
    """`a * b` rounded on its own: a select XLA cannot contract into a later add (as
    `numerics.float32_product`; NaN kept)."""
    p = lax.mul(a, b)
    return jnp.where(p == p, p, jnp.full((), jnp.nan, p.dtype))


def _fma(a, b, c):
    """`a * b + c`, where torch's CPU kernels fuse it (`vec::fmadd`: `add_(x, alpha=)`, `lerp_`,
    `addcmul_`) and round once. Here XLA may contract it into an FMA or round the product
    first: either way within an ulp of torch's result per op. An exact emulation (a Dekker
    product and TwoSum, ~25 ops per element) made the step 1.8-1.9x optax's on CPU for a few
    ulps over a 10,000-step run (BENCHMARKS.md, "schedule-free"); float32 stays within a few
    ulps of schedulefree's, float64 within 1e-12."""
    return lax.add(lax.mul(a, b), c)


def _lerp_weights(weight) -> tuple:
    """`(|w| < 0.5, w or w - 1)` of `_lerp` for a scalar weight (computed once per step where
    every leaf lerps by the same weight)."""
    small = jnp.abs(weight) < 0.5  # (jnp: a complex weight's modulus)
    return small, jnp.where(small, weight, weight - jnp.ones((), weight.dtype))


def _lerp(start, end, weight, weights: tuple | None = None):
    """torch's CPU `start.lerp_(end, weight)` (`lerp_vec`): `fma(w, end - start, start)` for
    |w| < 0.5, else `fma(w - 1, end - start, end)` (w - 1 in the tensor's dtype). `weights`:
    `_lerp_weights(weight)`, when already computed."""
    small, coeff = _lerp_weights(weight) if weights is None else weights
    diff = lax.sub(end, start)
    base = lax.select(lax.broadcast_in_dim(small, diff.shape, ()), start, end)
    return _fma(coeff, diff, base)


# --------------------------------------------------------------------------- state
class ScheduleFreeGroup(NamedTuple):
    """schedulefree's group-level state (entries of its `param_groups`, not `state[p]`).

    Wide numbers are pairs: `weight_sum + weight_sum_lo` (the float64 Python float schedulefree
    keeps; `_lo` is 0 under x64, the low float32 word otherwise), likewise `lr_max`,
    `scheduled_lr` (the lr of the last step, schedulefree's `group['scheduled_lr']`) and
    `beta1` (the group's beta1 / momentum last used by a step, for `.eval()`/`.train()`)."""

    k: jax.Array  # steps taken by the group (int32)
    weight_sum: jax.Array
    weight_sum_lo: jax.Array
    lr_max: jax.Array
    lr_max_lo: jax.Array
    beta1: jax.Array
    beta1_lo: jax.Array
    scheduled_lr: jax.Array
    scheduled_lr_lo: jax.Array


# schedulefree's group entries, with the Wide pair behind each float
_GROUP_FLOATS = {"weight_sum": ("weight_sum", "weight_sum_lo"), "lr_max": ("lr_max", "lr_max_lo"),
                 "scheduled_lr": ("scheduled_lr", "scheduled_lr_lo")}


def _export_group(group: Any) -> dict:
    """`param_groups[i]`'s `k` (a Python int) and `weight_sum`, `lr_max`, `scheduled_lr`
    (Python floats: the pair's float64 sum), as schedulefree keeps them."""
    out: dict = {"k": int(np.asarray(group.k))}
    for key, (hi, lo) in _GROUP_FLOATS.items():
        out[key] = float(np.float64(np.asarray(getattr(group, hi))) + np.float64(np.asarray(getattr(group, lo))))
    return out


def _view_group(group: Any) -> dict:
    """The live entries (device scalars; a float's high word without x64)."""
    return {"k": group.k, **{key: getattr(group, hi) for key, (hi, _) in _GROUP_FLOATS.items()}}


def _host_number(value: Any, key: str) -> float:
    arr = host_array(value, f"loaded param group entry {key!r}")
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) \
            or arr.dtype == np.bool_:
        raise TypeError(f"loaded param group entry {key!r} must be a real number, got {value!r}")
    return float(arr.reshape(()))


def _load_group(fresh: Any, entries: dict) -> Any:
    """`fresh` with schedulefree's group entries (those given) written in, checked: `k` an
    integer in [0, 2**31), the floats real and finite (schedulefree's next step would give nan)."""
    new = {}
    if "k" in entries:
        k = entries["k"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < 2**31:
            raise ValueError(f"loaded param group entry 'k' must be an integer in [0, 2**31), got {k!r}")
        new["k"] = jnp.asarray(int(k), jnp.int32)
    wide = _Wide()
    for key, (hi, lo) in _GROUP_FLOATS.items():
        if key in entries:
            x = _host_number(entries[key], key)
            if not np.isfinite(x):
                raise ValueError(f"loaded param group entry {key!r} must be finite, got {x!r}")
            pair = wide.host(x)
            new[hi], new[lo] = jnp.asarray(pair[0], wide.dtype), jnp.asarray(pair[1]).astype(_F32)
    return fresh._replace(**new)


declare_torch_state(ScheduleFreeGroup, group=GroupEntries(
    ("k", "weight_sum", "lr_max", "scheduled_lr"), export=_export_group, load=_load_group, view=_view_group))


class ScheduleFreeWrapperGroup(ScheduleFreeGroup):
    """`ScheduleFreeGroup` for `wrap_schedule_free`, whose reference (`ScheduleFreeWrapper`)
    writes only `k`, `lr_max` and `weight_sum` into the base's groups (its own declaration:
    `torch_layout_of` reads a type's own)."""

    __slots__ = ()


_WRAPPER_KEYS = ("k", "weight_sum", "lr_max")
declare_torch_state(ScheduleFreeWrapperGroup, group=GroupEntries(
    _WRAPPER_KEYS, export=lambda g: {k: v for k, v in _export_group(g).items() if k in _WRAPPER_KEYS},
    load=lambda fresh, entries: _load_group(fresh, {k: v for k, v in entries.items() if k in _WRAPPER_KEYS}),
    view=lambda g: {k: v for k, v in _view_group(g).items() if k in _WRAPPER_KEYS}))


class ScheduleFreeAdamState(NamedTuple):
    """schedulefree's per-param state of AdamW/RAdamScheduleFree (`state[p]` keys)."""

    z: Any  # the iterate the base step moves (state['z']), params-shaped
    exp_avg_sq: Any  # second moment (state['exp_avg_sq']), params-shaped
    started: LeafScalars  # per-leaf count of steps with a gradient (schedulefree has 'z' once > 0)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


class ScheduleFreeSGDState(NamedTuple):
    """schedulefree's per-param state of SGDScheduleFree."""

    z: Any
    started: LeafScalars
    schedule_count: jax.Array


for _state_type, _buffers in ((ScheduleFreeAdamState, ("z", "exp_avg_sq")), (ScheduleFreeSGDState, ("z",))):
    declare_torch_state(_state_type, buffers=_buffers, started="started",
                        internal={"started": STARTED, "schedule_count": STEPS_TAKEN})


class ScheduleFreeState(NamedTuple):
    """The whole state: the per-param part and the group part (two declared nodes; this
    container is undeclared, so the adapter's converter looks into it)."""

    params: Any  # ScheduleFreeAdamState | ScheduleFreeSGDState (z for the wrapper)
    group: ScheduleFreeGroup | ScheduleFreeWrapperGroup
    base: Any = None  # the wrapped optimizer's state (`wrap_schedule_free`)

_KINDS = ("adamw", "sgd", "radam")


def _maybe_nonzero(x) -> bool:
    """False only for a host zero (schedulefree's `if decay != 0`); traced values apply."""
    x = numerics.plain(x)
    return not (numerics.is_host_scalar(x) and float(x) == 0)


def _init_group(b1) -> ScheduleFreeGroup:
    wide = _Wide()
    lr_max = wide.host(-1.0)
    beta1 = wide.of(numerics.resolve(b1, jnp.zeros((), jnp.int32)))
    lo = lambda x: jnp.array(x, _F32) if not wide.x64 else jnp.zeros((), _F32)
    return ScheduleFreeGroup(
        k=jnp.zeros((), jnp.int32), weight_sum=jnp.zeros((), wide.dtype), weight_sum_lo=jnp.zeros((), _F32),
        lr_max=jnp.array(lr_max[0], wide.dtype), lr_max_lo=lo(lr_max[1]),
        beta1=jnp.array(beta1[0], wide.dtype), beta1_lo=lo(beta1[1]),
        scheduled_lr=jnp.zeros((), wide.dtype), scheduled_lr_lo=jnp.zeros((), _F32))


def _radam_rect(wide: _Wide, step, b2, silent_sgd_phase: bool):
    """RAdam's rectification `rect`, the `rho_t > 4` flag and `1 - beta2**t` at `step`, in
    schedulefree's float64 order of operations (wide numbers)."""
    one, two, four = wide.host(1.0), wide.host(2.0), wide.host(4.0)
    b2w = wide.of(b2)
    beta2_t = wide.power_count(b2w, step)
    bias_correction2 = wide.sub(one, beta2_t)
    rho_inf = wide.sub(wide.div(two, wide.sub(one, b2w)), one)
    # rho_t = rho_inf - 2 * step * beta2_t / bias_correction2 (left to right)
    rho_t = wide.sub(rho_inf, wide.div(wide.mul(wide.mul(two, wide.integer(step)), beta2_t),
                                       wide.where(wide.is_zero(bias_correction2), one, bias_correction2)))
    on = wide.greater(rho_t, four)
    safe_rho_t = wide.where(on, rho_t, wide.host(5.0))
    numerator = wide.mul(wide.mul(wide.sub(safe_rho_t, four), wide.sub(safe_rho_t, two)), rho_inf)
    denominator = wide.mul(wide.mul(wide.sub(rho_inf, four), wide.sub(rho_inf, two)), safe_rho_t)
    rect = wide.sqrt(wide.div(numerator, denominator))
    rect = wide.where(on, rect, wide.host(0.0 if silent_sgd_phase else 1.0))
    return rect, on, bias_correction2


def scale_by_schedule_free(
    lr: ScalarOrSchedule = 0.0025,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    warmup_steps: ScalarOrSchedule = 0,
    r: ScalarOrSchedule = 0.0,
    weight_lr_power: ScalarOrSchedule = 2.0,
    *,
    kind: str = "adamw",
    silent_sgd_phase: bool = True,
) -> GradientTransformation:
    """One schedule-free step of schedulefree's `AdamWScheduleFree` (`kind="adamw"`),
    `SGDScheduleFree` (`"sgd"`, `b1` its momentum) or `RAdamScheduleFree` (`"radam"`), in train
    mode: the params are schedulefree's `y`. With `k` the group's step count (all leaves, a None
    gradient included):

        sched  = (k + 1) / warmup_steps  if k < warmup_steps  else 1      (adamw, sgd)
        sched  = RAdam's rect(k + 1) (0, or 1 without silent_sgd_phase, while rho_t <= 4)
        lr_t   = lr * sched;   lr_max = max(lr_t, lr_max)   (lr_max_0 = -1)
        weight = (k + 1)**r * lr_max**weight_lr_power;  weight_sum += weight
        ckp1   = weight / weight_sum  (0 when weight_sum == 0)
        g'     = g / (sqrt(v_t / (1 - b2**(k+1))) + eps),  v_t = b2 v + (1 - b2) g^2  (adamw;
                 radam while rho_t > 4; sgd: g' = g)
        g'     = g' + weight_decay * y                      (if weight_decay != 0)
        y'     = lerp(y, z, ckp1) + lr_t (b1 (1 - ckp1) - 1) g'
        z'     = z - lr_t g'

    The block emits `u = y' - y`, so `apply_updates` gives `y + (y' - y)`: y' exactly whenever
    y' is within a factor 2 of y (Sterbenz), else to an ulp of max(|y|, |y'|) (as ASGD). The
    scalars `ckp1`, `lr_t` and the y step are computed as schedulefree's float64 host math
    (`_Wide`) and rounded once to the param's dtype. `z` starts as a copy of the params (what
    schedulefree clones at a param's first gradient: its params do not move before). A leaf
    whose gradient is None is skipped (z, v, started untouched) while `k` and `weight_sum`
    advance, as schedulefree's group keys do. bf16/f16 params are rounded after every in-place
    op, as torch's tensors are. Complex params follow schedulefree's complex arithmetic (no
    `view_as_real` there): `v` accumulates the complex square `g * g` (not |g|^2), and the
    normalisation takes the complex sqrt and quotient; the rest is linear, pair by pair.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    adaptive = kind != "sgd"
    silent_sgd_phase = bool(silent_sgd_phase)

    def init(params):
        z = jax.tree.map(lambda p: None if p is None else jnp.array(p, copy=True), params, is_leaf=is_none)
        common = dict(z=z, started=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))
        if adaptive:
            per_param = ScheduleFreeAdamState(exp_avg_sq=tree_zeros_like(params), **common)
        else:
            per_param = ScheduleFreeSGDState(**common)
        return ScheduleFreeState(per_param, _init_group(b1))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_schedule_free needs the params (y): call update(updates, state, params).")
        h = hyperparams(state.params.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)
        wide = _Wide()
        g = state.group
        k = g.k
        step = numerics.safe_increment(k)
        step_w = wide.integer(step)
        one = wide.host(1.0)
        b1w = wide.of(h.b1)
        radam_on = None
        if kind == "radam":
            sched, radam_on, bc2_wide = _radam_rect(wide, step, h.b2, silent_sgd_phase)
        else:
            warm = numerics.plain(h.warmup_steps)
            if numerics.is_host_scalar(warm) and float(warm) <= 0:
                sched = one
            else:
                warm_w = wide.of(warm)
                in_warmup = k.astype(wide.dtype) < wide.rounded(warm_w, wide.dtype)
                sched = wide.where(in_warmup, wide.div(step_w, warm_w), one)
        lr_t = wide.mul(wide.of(h.lr), sched)
        lr_max_old = (g.lr_max, g.lr_max_lo.astype(wide.dtype) if not wide.x64 else g.lr_max_lo)
        lr_max = wide.where(wide.greater(lr_max_old, lr_t), lr_max_old, lr_t)
        weight = wide.mul(wide.power(step_w, h.r), wide.power(lr_max, h.weight_lr_power))
        weight_sum = wide.add((g.weight_sum, g.weight_sum_lo if not wide.x64 else jnp.zeros((), wide.dtype)), weight)
        zero_sum = wide.is_zero(weight_sum)
        safe_sum = wide.where(zero_sum, one, weight_sum)
        ckp1 = wide.where(zero_sum, wide.host(0.0), wide.div(weight, safe_sum))
        y_lr = wide.mul(lr_t, wide.sub(wide.mul(b1w, wide.sub(one, ckp1)), one))
        if adaptive and kind == "adamw":
            bc2 = wide.sub(one, wide.power_count(wide.of(h.b2), step))  # `1 - beta2 ** (k+1)`
            bc2_of = lambda dtype: wide.rounded(bc2, dtype)
        elif adaptive:
            bc2_of = lambda dtype: wide.rounded(bc2_wide, dtype)
        decays = _maybe_nonzero(h.weight_decay)

        def step_scalars(count, dtype):
            del count
            out = (wide.rounded(ckp1, dtype), wide.rounded(y_lr, dtype), wide.rounded(lr_t, dtype))
            out = _computed_once(out + ((bc2_of(dtype),) if adaptive else ()), step)
            return out + _lerp_weights(out[0])  # the y lerp's weight: the same for every leaf

        def math(leaf, grad, z, *rest):
            scalars = rest[-1]
            c, a, lr_d = scalars[:3]
            c_weights = scalars[-2:]
            dtype = leaf.dtype
            rd = leaf.rounded  # torch writes every in-place result back into the param's dtype
            gn_y = None  # the y update's gn where it recomputes its own (below)
            if adaptive and leaf.is_complex:  # schedulefree's complex ops (addcmul_(g, g), sqrt, div)
                v, y = rest[0], rest[1]
                gc, vc = leaf.as_complex(grad, v)
                vc = vc * numerics.scalar(h.b2, dtype) + numerics.one_minus(h.b2, dtype) * gc * gc
                nc = gc / (jnp.sqrt(vc / scalars[3]) + numerics.scalar(h.eps, dtype))
                v, normalized = leaf.as_real(vc, nc)
                gn = normalized if radam_on is None else jnp.where(radam_on, normalized, grad)
            elif adaptive:
                v, y = rest[0], rest[1]
                v = rd(lax.mul(v, numerics.scalar(h.b2, dtype)))
                v = rd(_fma(lax.mul(numerics.one_minus(h.b2, dtype), grad), grad, v))

                def normalized_of(grad, v):
                    denom = rd(lax.div(v, scalars[3]))
                    denom = rd(lax.add(rd(lax.sqrt(denom)), numerics.scalar(h.eps, dtype)))
                    normalized = rd(lax.div(grad, denom))
                    return normalized if radam_on is None else jnp.where(radam_on, normalized, grad)

                gn = normalized_of(grad, v)
                # The y update recomputes it from its inputs behind a barrier (the same numbers):
                # XLA then computes it inside both the z and the y kernels, where one shared
                # result (its fusion does not duplicate a divide) was written to memory and read twice
                gn_y = normalized_of(*lax.optimization_barrier((grad, v)))
            else:
                y = rest[0]
                gn = grad
            def decayed(gn):
                return rd(_fma(numerics.scalar(h.weight_decay, dtype), y, gn)) if decays else gn

            gn = decayed(gn)
            gn_y = gn if gn_y is None else decayed(gn_y)
            new_y = rd(_lerp(y, z, c, c_weights))
            new_y = rd(_fma(a, gn_y, new_y))
            new_z = _fma(lax.neg(lr_d), gn, z)
            u = lax.sub(new_y, y)
            return (u, new_z, v) if adaptive else (u, new_z)

        buffers = ("z", "exp_avg_sq") if adaptive else ("z",)
        new_updates, new_params_state = per_param_update(
            state.params, updates, math, buffers=buffers, inputs=(params,), step_field="started",
            counts=state.params.started.map(lambda _: step), step_scalars=step_scalars)
        new_group = g._replace(
            k=step, weight_sum=weight_sum[0], weight_sum_lo=weight_sum[1].astype(_F32),
            lr_max=lr_max[0], lr_max_lo=lr_max[1].astype(_F32),
            beta1=b1w[0].astype(wide.dtype), beta1_lo=b1w[1].astype(_F32),
            scheduled_lr=lr_t[0].astype(wide.dtype), scheduled_lr_lo=lr_t[1].astype(_F32))
        return new_updates, ScheduleFreeState(new_params_state, new_group)

    return GradientTransformation(init, update)


def wrap_schedule_free(
    base: GradientTransformation,
    lr: ScalarOrSchedule,
    weight_decay_at_y: ScalarOrSchedule = 0.0,
    momentum: ScalarOrSchedule = 0.9,
    weight_lr_power: ScalarOrSchedule = 2,
    r: ScalarOrSchedule = 0,
) -> GradientTransformation:
    """schedulefree's `ScheduleFreeWrapper` (1.4.1) around `base` (train mode; params are y).
    `lr` is the base's learning rate (schedulefree reads the base's `group['lr']`): give the
    same number or schedule. Per step, for each leaf with a gradient:

        z <- z - lr wd y;  y <- y - lr wd (1 - m) y        (wd = weight_decay_at_y, if != 0)
        x  = lerp(y, z, 1 - 1/m)
        z <- z + base_update(g, at z)                      (the base steps from z)
        lr_max = max(lr, lr_max) (lr_max_0 = 0);  weight = (k+1)**r lr_max**weight_lr_power
        weight_sum += weight;  ckp1 = weight / weight_sum
        x <- lerp(x, z, ckp1);  y' = lerp(x, z, 1 - m)

    and emits `y' - y` (as `scale_by_schedule_free`). schedulefree raises ZeroDivisionError
    when weight_sum is 0 (lr = 0 with weight_lr_power > 0): here ckp1 = 0 then. The base's
    `group.get('d', 1.0)` (D-Adaptation bases) is taken as 1.
    """

    def init(params):
        z = jax.tree.map(lambda p: None if p is None else jnp.array(p, copy=True), params, is_leaf=is_none)
        group = ScheduleFreeWrapperGroup(*_init_group(momentum))
        zero = _Wide().host(0.0)
        group = group._replace(lr_max=jnp.array(zero[0], group.lr_max.dtype), lr_max_lo=jnp.zeros((), _F32))
        per_param = ScheduleFreeSGDState(z=z, started=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))
        return ScheduleFreeState(per_param, group, base.init(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("wrap_schedule_free needs the params (y): call update(updates, state, params).")
        pp = state.params
        h = hyperparams(pp.schedule_count, lr=lr, wd=weight_decay_at_y, m=momentum, r=r, p=weight_lr_power)
        wide = _Wide()
        g = state.group
        one = wide.host(1.0)
        lr_w, m_w = wide.of(h.lr), wide.of(h.m)
        decays = _maybe_nonzero(h.wd)
        z_decay = wide.mul(lr_w, wide.of(h.wd))  # lr * weight_decay_at_y
        y_decay = wide.mul(z_decay, wide.sub(one, m_w))  # lr * weight_decay_at_y * (1 - momentum)
        to_x = wide.sub(one, wide.div(one, m_w))
        to_y = wide.sub(one, m_w)
        step = numerics.safe_increment(g.k)
        lr_max_old = (g.lr_max, g.lr_max_lo.astype(wide.dtype) if not wide.x64 else g.lr_max_lo)
        lr_max = wide.where(wide.greater(lr_max_old, lr_w), lr_max_old, lr_w)
        weight = wide.mul(wide.power(wide.integer(step), h.r), wide.power(lr_max, h.p))
        weight_sum = wide.add((g.weight_sum, g.weight_sum_lo if not wide.x64 else jnp.zeros((), wide.dtype)), weight)
        zero_sum = wide.is_zero(weight_sum)
        ckp1 = wide.where(zero_sum, wide.host(0.0), wide.div(weight, wide.where(zero_sum, one, weight_sum)))

        treedef = jax.tree.structure(params, is_leaf=is_none)
        ys, zs = jax.tree.leaves(params, is_leaf=is_none), treedef.flatten_up_to(pp.z)
        gs = treedef.flatten_up_to(updates)
        # before the base step: decay at y (z.sub_(p, ..), p.sub_(p, ..)), then x, and the z
        # the base steps from (schedulefree swaps x into z's buffer meanwhile)
        xs, z1 = [], []
        for y, z, gr in zip(ys, zs, gs):
            if y is None or gr is None:
                xs.append(None)
                z1.append(z)
                continue
            dtype = numerics.compute_dtype(y.dtype)
            yc, zc = y.astype(dtype), z.astype(dtype)
            if decays:
                z_alpha = jnp.broadcast_to(wide.rounded(wide.neg(z_decay), dtype), yc.shape)
                y_alpha = jnp.broadcast_to(wide.rounded(wide.neg(y_decay), dtype), yc.shape)
                zc = _fma(z_alpha, yc, zc).astype(z.dtype).astype(dtype)
                yc = _fma(y_alpha, yc, yc).astype(y.dtype).astype(dtype)
            xs.append(_lerp(yc, zc, wide.rounded(to_x, dtype)).astype(y.dtype))
            z1.append(zc.astype(z.dtype))
        z_tree = treedef.unflatten(z1)
        base_updates, base_state = base.update(updates, state.base, z_tree)
        z2 = jax.tree.leaves(apply_updates(z_tree, base_updates), is_leaf=is_none)
        new_u, new_z = [], []
        for y, x, z_old, z_new, gr in zip(ys, xs, zs, z2, gs):
            if y is None or gr is None:
                new_u.append(None if y is None else gr)
                new_z.append(z_old)
                continue
            dtype = numerics.compute_dtype(y.dtype)
            xc = _lerp(x.astype(dtype), z_new.astype(dtype), wide.rounded(ckp1, dtype)).astype(y.dtype)
            y2 = _lerp(xc.astype(dtype), z_new.astype(dtype), wide.rounded(to_y, dtype)).astype(y.dtype)
            new_u.append(lax.sub(y2.astype(dtype), y.astype(dtype)))
            new_z.append(z_new)
        new_pp = pp._replace(z=treedef.unflatten(new_z), started=increment_counts(pp.started, updates, params),
                             schedule_count=numerics.safe_increment(pp.schedule_count))
        new_group = g._replace(k=step, weight_sum=weight_sum[0], weight_sum_lo=weight_sum[1].astype(_F32),
                               lr_max=lr_max[0], lr_max_lo=lr_max[1].astype(_F32),
                               beta1=m_w[0].astype(wide.dtype), beta1_lo=m_w[1].astype(_F32))
        return treedef.unflatten(new_u), ScheduleFreeState(new_pp, new_group, base_state)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- eval / train views
def _find_state(state: Any):
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScheduleFreeState) or is_none(x))
             if isinstance(s, ScheduleFreeState)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one schedule-free state in the optimizer state, found {len(found)}.")
    return found[0]


def _lerp_to_z(state: Any, params: Any, weight_of, beta1: Any = None) -> Any:
    sf = _find_state(state)
    wide = _Wide()
    g = sf.group
    b1 = (g.beta1, jnp.zeros((), wide.dtype) if wide.x64 else g.beta1_lo) if beta1 is None else wide.of(beta1)
    weight = weight_of(wide, b1)
    treedef = jax.tree.structure(params, is_leaf=is_none)
    zs = treedef.flatten_up_to(sf.params.z)
    leaves = jax.tree.leaves(params, is_leaf=is_none)
    started = iter(sf.params.started.values)
    out = []
    for p, z in zip(leaves, zs):
        if p is None:
            out.append(None)
            continue
        s = next(started)
        p = jnp.asarray(p)
        dtype = numerics.compute_dtype(p.dtype)
        moved = _lerp(p.astype(dtype), jnp.asarray(z).astype(dtype), wide.rounded(weight, dtype)).astype(p.dtype)
        out.append(jnp.where(s > 0, moved, p))
    return treedef.unflatten(out)


def schedule_free_eval_params(state: Any, params: Any, beta1: Any = None) -> Any:
    """The params schedulefree's `.eval()` sets (`x`): `p.lerp_(z, 1 - 1/beta1)` for each param
    that has taken a step, from the train-mode params `y` (what the steps update). Pure: the
    state is not changed (schedulefree's mode flag is the caller's). `beta1`: the group's
    beta1 (momentum) now (schedulefree reads `group['betas'][0]` when `.eval()` is called);
    default the one the last step used. `1 - 1/beta1` is computed as schedulefree's float64 host
    math (a host `beta1`) and rounded once to the param's dtype."""
    return _lerp_to_z(state, params, lambda w, b1: w.sub(w.host(1.0), w.div(w.host(1.0), b1)), beta1)


def schedule_free_train_params(state: Any, eval_params: Any, beta1: Any = None) -> Any:
    """The params schedulefree's `.train()` sets (`y`) from the eval-mode params `x`:
    `p.lerp_(z, 1 - beta1)` (`beta1` as in `schedule_free_eval_params`). Like torch,
    `train(eval(y))` is y up to the rounding of the lerps."""
    return _lerp_to_z(state, eval_params, lambda w, b1: w.sub(w.host(1.0), b1), beta1)


__all__ = [
    "ScheduleFreeAdamState", "ScheduleFreeGroup", "ScheduleFreeSGDState", "ScheduleFreeState", "ScheduleFreeWrapperGroup",
    "scale_by_schedule_free",
    "wrap_schedule_free",
    "schedule_free_eval_params", "schedule_free_train_params",
]
