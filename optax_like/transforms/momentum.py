"""torch's heavy-ball momentum, `trace`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import LeafScalars, increment_counts, init_counts, map_params, update_leaves, zeros_like
from optax_like.core.torch_layout import declare_torch_state, STARTED, STEPS_TAKEN


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
) -> GradientTransformation:
    """torch.optim.SGD's momentum:

        b_1 = g_1                                  (the first gradient itself, undamped)
        b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        u_t = g_t + momentum * b_t   if nesterov   else   b_t

    This differs from `optax.trace`, whose buffer starts at zero (b_1 = g_1 only when
    dampening = 0, and `optax.trace` has no dampening). Leaves without a gradient (None)
    keep their buffer and step count, as torch skips a param whose `.grad` is None.
    """

    def init(params):
        buffers = zeros_like(params)
        return TraceState(buffers, init_counts(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        mu = numerics.resolve(momentum, state.schedule_count)
        damp = numerics.resolve(dampening, state.schedule_count)

        first_step = numerics.once_per_step(lambda count: count == 0)
        undamped = numerics.is_host_scalar(damp) and damp == 0  # (1 - 0) * g is g: not traced

        def leaf(g, buf, count):
            dtype = numerics.compute_dtype(g.dtype)
            g = g.astype(dtype)
            mu_c = numerics.scalar(mu, dtype)
            running = buf.astype(dtype) * mu_c + (g if undamped else numerics.one_minus(damp, dtype) * g)
            new_buf = jax.lax.select(first_step(count), g, running)  # a scalar predicate (keeps shardings)
            if dtype == buf.dtype:
                # Speed only (values unchanged): materialise the new buffer once (written in
                # place) for the update to read, instead of recomputing it in the params' kernel.
                new_buf = jax.lax.optimization_barrier(new_buf)
            out = g + mu_c * new_buf if nesterov else new_buf
            return out, new_buf.astype(buf.dtype)

        new_updates, buffers = update_leaves(leaf, updates, state.momentum_buffer, counts=state.count)
        counts = increment_counts(state.count, updates, state.momentum_buffer)
        return new_updates, TraceState(buffers, counts, numerics.safe_increment(state.schedule_count))

    return GradientTransformation(init, update)
