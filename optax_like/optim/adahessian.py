"""`optax_like.optim.Adahessian`: timm.optim.Adahessian's stateful surface over `optax_like.adahessian`.

One `step(loss_fn, *batch)` is one timm `step(closure)` after `loss.backward(create_graph=True)`:
ONE jitted, donated XLA computation that differentiates the loss, draws each group's Rademacher
probes from the PRNG key in its state (`adahessian_probes`, the group index folded in), computes
the Hessian-vector products over every group's params at once (timm's one `autograd.grad` over
all its groups: forward over reverse here), and updates the groups with their Hutchinson
estimates (`update(..., hessian=...)`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from optax_like import registry as _registry
from optax_like.core.tree import is_none
from optax_like.optim import _step
from optax_like.optim.optimizer import Optimizer, make_optimizer_class
from optax_like.transforms.adahessian import (ScaleByAdahessianState, adahessian_probes, adahessian_selection,
                                               hutchinson_estimate)

__all__ = ["Adahessian"]

NEEDS_CLOSURE = (
    "Adahessian.step() needs the loss: step(loss_fn, *batch) with loss_fn(params, *batch) -> loss. Its "
    "Hessian-vector products differentiate the loss twice (timm's step needs loss.backward(create_graph=True) "
    "before it); gradients given by backward() alone do not carry them.")


def _adahessian_node(state: Any) -> ScaleByAdahessianState:
    """The `scale_by_adahessian` state inside a group's (chain) state."""
    for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, ScaleByAdahessianState)):
        if isinstance(node, ScaleByAdahessianState):
            return node
    raise TypeError("Adahessian: no scale_by_adahessian state in the group's state")


def adahessian_update(config: _step.Config, opt_leaves, states, frozen, hypers, grads, args, skipped, amp=None,
                      count=None):
    """Adahessian's rule for the adapter's jitted step (optim/_step.py): the closure's loss and
    gradients, every group's probes, the Hessian-vector products over all groups (skipped by a
    `lax.cond` at steps where no param recomputes its estimate), then each group's update."""
    closure: Callable = config.closure  # pyright: ignore[reportAssignmentType]  (_step refuses None)
    layout, specs = config.layout, config.specs

    loss_of = _step.closure_loss(layout, closure, frozen, args)
    # a param the loss does not reach gets None (timm's `p.grad is None`: skipped, no probe)
    (loss, aux), grads, states = _step.closure_gradients(loss_of, opt_leaves, states)
    trees = [treedef.unflatten(g) for treedef, g in zip(layout.group_defs, grads)]
    options = [dict(spec.static_items) for spec in specs]
    n_samples = {o["n_samples"] for o in options}
    if len(n_samples) != 1:
        raise ValueError(f"Adahessian: every param group must have the same n_samples (timm's is the optimizer's), "
                         f"got {sorted(n_samples)}")
    n = n_samples.pop()
    nodes = [_adahessian_node(s) for s in states]
    probes = [adahessian_probes(node, tree, n_samples=n, update_each=o["update_each"], stream=g)
              for g, (node, tree, o) in enumerate(zip(nodes, trees, options))]
    selections = [s for node, tree, o in zip(nodes, trees, options)
                  for s in adahessian_selection(node, tree, o["update_each"]) if s is not False]

    def value(leaves):
        return loss_of(leaves)[0]

    grad_fn, primals = jax.grad(value), tuple(opt_leaves)

    def hvp(tangents):  # over every group's params at once (timm's one autograd.grad); None: no probe
        tangents = jax.tree.map(lambda z, x: jnp.zeros_like(x) if z is None else z.astype(x.dtype), tangents,
                                primals, is_leaf=is_none)
        return jax.jvp(grad_fn, (primals,), (tangents,))[1]

    samples = [tuple(tuple(jax.tree.leaves(p[s], is_leaf=is_none)) for p in probes) for s in range(n)]
    zeros = jax.tree.map(jnp.zeros_like, samples[0])
    hessians = (lax.cond(jnp.any(jnp.stack(selections)), lambda: hutchinson_estimate(hvp, samples), lambda: zeros)
                if selections else zeros)

    new_leaves, new_states = [], []
    for g, (spec, treedef) in enumerate(zip(specs, layout.group_defs)):
        tx = spec.build(hypers[g])
        params = treedef.unflatten(opt_leaves[g])
        updates, state = tx.update(trees[g], states[g], params, hessian=treedef.unflatten(list(hessians[g])))
        params = spec.apply(params, updates, g, count)
        new_leaves.append(tuple(treedef.flatten_up_to(params)))
        new_states.append(state)
    return (loss, aux, None, None), tuple(new_leaves), tuple(new_states), skipped


class AdahessianOptimizer(Optimizer):
    """The step of `Adahessian`: a loss function is required (see the class's docstring)."""

    def step(self, closure: Callable | None = None, *args: Any, **kwargs: Any):  # type: ignore[override]
        """One timm `step(closure)`: returns the loss at the params given to the step (and the aux
        of that evaluation when the loss function returns `(loss, aux)`)."""
        return super().step(closure, *args, **kwargs)

    def _step(self, closure=None, *args, **kwargs):
        if kwargs:
            raise TypeError(f"Adahessian.step() takes no keyword arguments (got {sorted(kwargs)}): clipping and "
                            "loss scaling would change the gradients its Hessian-vector products differentiate")
        if closure is None:
            raise TypeError(NEEDS_CLOSURE)
        if not callable(closure):
            raise TypeError(f"{type(closure).__name__!r} object is not callable")
        if self.skip_nonfinite:
            raise ValueError("Adahessian does not support skip_nonfinite")
        return self._run_step(adahessian_update, self._hypers(), closure, args)


_INFO = _registry.by_class("Adahessian")

Adahessian = make_optimizer_class(
    "Adahessian", _INFO.factory, base=AdahessianOptimizer, **_INFO.adapter,
    doc="""timm.optim.Adahessian over `optax_like.adahessian` (see its docstring for the algorithm).

        opt = optax_like.optim.Adahessian(params, lr=0.1, weight_decay=1e-4, update_each=1, n_samples=1)
        loss = opt.step(loss_fn, *batch)      # loss_fn(params, *batch) -> scalar (or (loss, aux))

    A timm loop

        loss = criterion(model(x), y); loss.backward(create_graph=True); optimizer.step(); optimizer.zero_grad()

    becomes `loss = opt.step(lambda p, x, y: criterion(apply(p, x), y), x, y)`: the loss function
    is required (timm needs `create_graph=True`; a `step()` without it raises a TypeError naming
    what is needed), and pending `backward()` gradients are discarded. One jitted call computes
    the loss, the gradients, the Hutchinson estimates `z * (H z)` (Rademacher probes, n_samples
    of them averaged, recomputed every `update_each` steps per param) and the update.

    The probes: JAX's PRNG, keyed per group (seed 2147483647, timm's generator's seed, with the
    group index folded in), not torch's generator: the numbers differ from timm's (parity tests
    feed ours to timm's step). Hessian-vector products span every group, as timm's one
    `autograd.grad` over all of them.

    State: timm's layout, `state[id] = {'hessian step', 'step', 'exp_avg', 'exp_hessian_diag_sq'}`
    (`'hessian step': 0` for every param from construction, as timm's `__init__` sets it; Python
    ints). Not in it (nor in timm's): the current estimate (timm's `p.hess`) and the PRNG key.
    After `load_state_dict` the estimate is recomputed at the next step for every param and the
    key restarts from the seed, as a resumed timm run does (a new process: `p.hess = 0.0`, a new
    generator); a run resumed here therefore differs from an uninterrupted one where
    `update_each > 1`.

    `update_each`, `n_samples` and `avg_conv_kernel` are compile-time group entries here (timm:
    attributes of the optimizer, for every group; `to_torch_state_dict` leaves them out).
    A param that the loss does not reach gets no gradient and is skipped, as timm skips
    `p.grad is None`. Difference from timm: complex params are refused at construction.
    """)
