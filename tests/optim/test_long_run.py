"""Long run of the adapter (issue: reliability): 10,000 steps with an lr edit before every step.

Checks: zero recompiles after the first step, flat host memory (RSS), and the same numbers as
the functional loop (`inject_hyperparams(adam)` with the lr written into its state each step).
"""

import jax
import jax.numpy as jnp
import numpy as np

import optax_like
import optax_like.optim as optim
from tests.optim.trace_count import step_traces

STEPS = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def lr_at(t: int) -> float:
    return 1e-2 * (0.5 + 0.5 * np.cos(t / 97.0))  # a different Python float every step


def grads_at(t: int, params):
    return jax.tree.map(lambda p: jnp.sin(p + 0.001 * t), params)


_grads_at = jax.jit(grads_at)


def test_ten_thousand_steps_with_lr_edits_every_step():
    params0 = {"w": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), "b": jnp.zeros(8)}
    opt = optim.Adam(jax.tree.map(jnp.copy, params0), lr=lr_at(0), betas=(0.9, 0.99), weight_decay=1e-3)

    tx = optax_like.inject_hyperparams(optax_like.adam)(lr=lr_at(0), betas=(0.9, 0.99), weight_decay=1e-3)
    fparams, fstate = jax.tree.map(jnp.copy, params0), tx.init(params0)

    @jax.jit
    def functional_step(params, state, lr, t):
        state.hyperparams["lr"] = lr
        updates, state = tx.update(grads_at(t, params), state, params)
        return optax_like.apply_updates(params, updates), state

    traces, rss = None, {}
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = lr_at(t)
        opt.zero_grad()
        opt.backward(_grads_at(t, opt.params))
        opt.step()
        fparams, fstate = functional_step(fparams, fstate, jnp.asarray(lr_at(t), jnp.float32), t)
        if t == 0:
            traces = step_traces()
        if t in (1_000, STEPS - 1):
            jax.block_until_ready(opt.params)
            rss[t] = rss_bytes()
    assert step_traces() == traces, "the adapter recompiled during the run"
    growth = rss[STEPS - 1] - rss[1_000]
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 9,000 steps"
    assert int(opt.state_dict()["state"][0]["step"]) == STEPS
    # The same numbers as the functional loop, bit for bit.
    for key in params0:
        np.testing.assert_array_equal(np.asarray(opt.params[key]), np.asarray(fparams[key]))
