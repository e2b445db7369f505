"""Typed client code over optax_like's public API, checked by pyright (basic) in CI
(`.venv/bin/pyright tests/docs/typed_client.py`; not collected by pytest).

pyright reads the installed package's annotations (py.typed) as a user's code would: this file
must type-check with no errors. It is not run.
"""

import jax
import jax.numpy as jnp

import optax_like as ol
import optax_like.optim
from optax_like import amp, checkpoint, param_groups, schedules, sharding
from optax_like.core import GradientTransformation


def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum(params["w"] ** 2)


def functional() -> None:
    params = {"w": jnp.zeros((3, 2))}
    tx: GradientTransformation = ol.chain(ol.add_decayed_weights(1e-4), ol.trace(0.9), ol.scale_by_learning_rate(0.1))
    for factory in (ol.sgd(0.1), ol.adam(1e-3), ol.adamw(1e-3), ol.lion(1e-4), ol.rmsprop(1e-2)):
        state = factory.init(params)
        updates, state = factory.update(jax.grad(loss_fn)(params), state, params)
        params = ol.apply_updates(params, updates)
    state = tx.init(params)
    injected = ol.inject_hyperparams(ol.sgd)(lr=0.1, momentum=0.9)
    injected.init(params)
    ol.MultiSteps(ol.adam(1e-3), 4).init(params)
    ol.per_leaf_scalars(state)
    schedules.cosine_annealing_lr(0.1, T_max=10)


def stateful() -> None:
    opt = ol.optim.AdamW({"w": jnp.zeros((3, 2))}, lr=1e-3)
    sched = ol.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    opt.step(loss_fn)
    sched.step()
    opt.zero_grad()
    opt.load_state_dict(opt.state_dict())


__all__ = ["functional", "stateful", "amp", "checkpoint", "param_groups", "sharding"]
