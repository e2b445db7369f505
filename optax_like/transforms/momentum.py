"""torch's heavy-ball momentum, `trace` (with timm's caution), and timm SGDW's `no_trace`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, increment_counts, init_counts
from optax_like.core.tree import full_like, is_none, map_params, update_leaves
from optax_like.core.torch_layout import declare_torch_state, STARTED, STEPS_TAKEN
from optax_like.transforms.caution import cautious, refuse_complex


class TraceState(NamedTuple):
    momentum_buffer: Any  # params-shaped, params' dtype
    count: LeafScalars  # per-leaf number of updates (0 = buffer not yet set, torch's `None`)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    TraceState,
    buffers=("momentum_buffer",),
    internal={"count": STARTED, "schedule_count": STEPS_TAKEN},
    started="count",
)


def trace(
    momentum: ScalarOrSchedule,
    dampening: ScalarOrSchedule = 0.0,
    nesterov: bool = False,
    *,
    caution: bool = False,
) -> GradientTransformation:
    """torch.optim.SGD's momentum:

        b_1 = g_1                                  (the first gradient itself, undamped)
        b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        u_t = g_t + momentum * b_t   if nesterov   else   b_t
        u_t <- u_t * mask / max(mean(mask), 1e-3),  mask = [u_t * g_t > 0]     if caution

    `caution` is timm's Cautious Optimizers mask (timm.optim.SGDW; `transforms.caution`), on
    the complex numbers as they are, which torch refuses: complex params raise its error at
    `init`.

    This differs from `optax.trace`, whose buffer starts at zero (b_1 = g_1 only when
    dampening = 0, and `optax.trace` has no dampening). Leaves without a gradient (None)
    keep their buffer and step count, as torch skips a param whose `.grad` is None.

    The buffer of a param that has not stepped holds -0.0 (torch's `None`; it equals 0), the
    additive identity: with a finite constant momentum and no dampening, `momentum * b + g`
    is then exactly `g` at a param's first step (every bit, signed zeros included; subnormals
    flush to zero, as in any XLA:CPU arithmetic), and the step compiles to optax's two kernels
    per leaf with no first-step select (SGD compiled 1.2-1.4x optax's time with it;
    BENCHMARKS.md, "Where compile time goes").
    """

    caution = bool(caution)

    def init(params):
        if caution:
            refuse_complex(params)
        buffers = full_like(params, -0.0)
        return TraceState(buffers, init_counts(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        mu = numerics.resolve(momentum, state.schedule_count)
        damp = numerics.resolve(dampening, state.schedule_count)

        first_step = numerics.once_per_step(lambda count: count == 0)
        undamped = numerics.is_host_scalar(damp) and damp == 0  # (1 - 0) * g is g: not traced
        # b_1 = mu * (-0.0) + g = g exactly (see the docstring) unless mu may be inf/nan (traced,
        # scheduled) or the first step must skip the dampening.
        starts_exactly = undamped and numerics.is_host_scalar(mu) and bool(np.isfinite(mu))

        def leaf(g, buf, count):
            # jax.lax, not jnp, in this per-leaf body: the same jaxpr, traced in a third of the time
            dtype = numerics.compute_dtype(g.dtype)
            g = numerics.cast(g, dtype)
            mu_c = numerics.scalar(mu, dtype)
            decayed = lax.mul(numerics.cast(buf, dtype), mu_c)
            running = lax.add(decayed, g if undamped else lax.mul(numerics.one_minus(damp, dtype), g))
            if starts_exactly and not jnp.issubdtype(dtype, jnp.complexfloating):  # complex mu * -0 is +0
                new_buf = running
            else:
                new_buf = jax.lax.select(first_step(count), g, running)  # a scalar predicate (keeps shardings)
            # No optimization_barrier on the new buffer: XLA:CPU writes it in place and the
            # params' kernel reads it; a barrier gives the same compiled program.
            out = lax.add(g, lax.mul(mu_c, new_buf)) if nesterov else new_buf
            if caution:
                out = cautious(out, g)
            return out, numerics.cast(new_buf, buf.dtype)

        new_updates, buffers = update_leaves(leaf, updates, state.momentum_buffer, counts=state.count)
        counts = increment_counts(state.count, updates, state.momentum_buffer)
        return new_updates, TraceState(buffers, counts, numerics.safe_increment(state.schedule_count))

    return GradientTransformation(init, update)


class NoTraceState(NamedTuple):
    count: LeafScalars  # per-leaf number of updates (timm creates a param's entry at its first gradient)
    schedule_count: jax.Array  # updates applied so far


declare_torch_state(
    NoTraceState,
    internal={"count": STARTED, "schedule_count": STEPS_TAKEN},
    started="count",
    none_keys=("momentum_buffer",),
)


def no_trace() -> GradientTransformation:
    """The momentum slot of timm.optim.SGDW without momentum: the updates pass unchanged; the
    state only marks which params have stepped, whose torch entry timm keeps as
    `{'momentum_buffer': None}` (declared `none_keys`, so the adapter's `state_dict` has it).
    `update` needs the params when some gradient is None (to tell which params it skips)."""

    def init(params):
        return NoTraceState(init_counts(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            present = [u for u in jax.tree.leaves(updates, is_leaf=is_none) if u is not None]
            if len(present) != len(state.count):
                raise ValueError("no_trace (timm's SGDW without momentum) needs the params when a gradient "
                                 "is None: call update(updates, state, params).")
            params = updates
        counts = increment_counts(state.count, updates, params)
        return updates, NoTraceState(counts, numerics.safe_increment(state.schedule_count))

    return GradientTransformation(init, update)
