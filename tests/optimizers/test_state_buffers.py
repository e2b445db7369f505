"""Every optimizer's state can be donated: no two state leaves share a buffer (eager init)."""

import jax
import jax.numpy as jnp
import pytest

import optax_like as ol
from optax_like.optimizers import __all__ as FACTORIES

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.ones((2,)), "v": jnp.ones((2, 2))}


def _factories():
    helpers = {f for info in ol.registry.OPTIMIZERS.values() for f in info.extra_functions}  # read a state, wrap
    return sorted(name for name in FACTORIES if callable(getattr(ol, name, None)) and name[0].islower()
                  and name not in helpers)


@pytest.mark.parametrize("name", _factories())
def test_eager_init_state_leaves_do_not_share_buffers(name):
    params = {"w": PARAMS["w"], "v": PARAMS["v"]} if name == "muon" else PARAMS
    state = getattr(ol, name)().init(params)
    pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len(pointers) == len(set(pointers)), f"{name}: state leaves share a buffer (donation fails)"


@pytest.mark.parametrize("name", ["asgd", "adam", "nadam", "sgd"])
def test_jitted_donated_step_runs_on_eager_init(name):
    tx = getattr(ol, name)()
    state = tx.init(PARAMS)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    params = jax.tree.map(jnp.copy, PARAMS)
    for _ in range(2):
        params, state = step(params, state, PARAMS)
    jax.block_until_ready(params)
