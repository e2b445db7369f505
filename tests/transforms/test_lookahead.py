"""optax_like.lookahead against timm 1.0.31's Lookahead wrapper (live), in the functional view.
The adapter class: tests/optim/test_lookahead.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like.registry import import_reference_module
from tests.parity.harness import assert_close, make_problem

torch = pytest.importorskip("torch")
TimmLookahead = import_reference_module("timm.optim.lookahead").Lookahead

# (our base factory, torch's base class, kwargs): both sides take the same kwargs
BASES = {
    "adamw": (ol.adamw, torch.optim.AdamW, dict(lr=0.05, weight_decay=0.01)),
    "sgd": (ol.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
}


def _run(base, dtype, k=3, alpha=0.5, steps=14, none_at=(4, 6), complex_params=False):
    """Both wrappers over `steps` steps; param 1's gradient is None at the steps `none_at`
    (k=3: step 6 is a sync, step 4 is not). Params compared after every step."""
    factory, torch_cls, kwargs = BASES[base]
    p0, grads = make_problem(dtype, steps=steps, complex_params=complex_params)
    tp = [torch.tensor(x, requires_grad=True) for x in p0]
    reference = TimmLookahead(torch_cls(tp, **kwargs), alpha=alpha, k=k)
    tx = ol.lookahead(factory(**kwargs), alpha=alpha, k=k)
    params = [jnp.asarray(x) for x in p0]
    state = ol.per_leaf_scalars(tx.init(params))
    for t, g in enumerate(grads, start=1):
        for x, gx in zip(tp, g):
            x.grad = torch.tensor(gx)
        gj = [jnp.asarray(x) for x in g]
        if t in none_at:
            tp[1].grad, gj[1] = None, None
        reference.step()
        updates, state = jax.jit(tx.update)(gj, state, params)
        params = ol.apply_updates(params, updates)
        assert_close(params, tp, "float64" if dtype == "float64" else "float32", t)
    return state, reference, tp


@pytest.mark.parametrize("base", sorted(BASES))
def test_lookahead_matches_timm_with_none_gradients(base, parity_dtype):
    state, reference, tp = _run(base, parity_dtype)
    slow = state.slow.lookahead_slow_buff
    for i, x in enumerate(tp):
        np.testing.assert_allclose(np.asarray(slow[i]), reference._base_optimizer.state[x]["lookahead_slow_buff"].numpy(),
                                   rtol=1e-12 if parity_dtype == "float64" else 1e-6, atol=1e-12)
    assert int(state.group.lookahead_step) == reference.param_groups[0]["lookahead_step"] == 14


@pytest.mark.parametrize("k, alpha", [(1, 0.8), (5, 0.0), (2, 1.0)])
def test_lookahead_options_match_timm(k, alpha, x64):
    _run("adamw", "float64", k=k, alpha=alpha, steps=11, none_at=())


def test_complex_params_follow_timm(x64):
    _run("adamw", "float64", complex_params=True, none_at=())


def test_validation_is_timms():
    base = ol.sgd(lr=0.1)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError) as theirs:
            TimmLookahead(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), alpha=alpha)
        with pytest.raises(ValueError, match=str(theirs.value)):
            ol.lookahead(base, alpha=alpha)
    with pytest.raises(ValueError) as theirs:
        TimmLookahead(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), k=0)
    with pytest.raises(ValueError, match=str(theirs.value)):
        ol.lookahead(base, k=0)
    with pytest.raises(TypeError, match="whole number"):
        ol.lookahead(base, k=2.5)  # timm would step `% 2.5`; ours is a compile-time count
    assert ol.lookahead(base, k=4.0) is not None


def test_state_structure_is_fixed_and_scan_matches_steps():
    """`update` keeps the state's structure (a sync step and a plain one alike), so a
    `lax.scan` over 7 steps gives the step-by-step numbers bit for bit."""
    tx = ol.lookahead(ol.adam(lr=0.1), alpha=0.5, k=3)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = [jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.1 * (i + 1)), params) for i in range(7)]
    state = tx.init(params)

    def step(carry, g):
        p, s = carry
        u, s2 = tx.update(g, s, p)
        assert jax.tree.structure(s2) == jax.tree.structure(s)
        return (ol.apply_updates(p, u), s2), None

    (scanned, _), _ = jax.lax.scan(step, (params, state), jax.tree.map(lambda *x: jnp.stack(x), *grads))
    carry = (params, state)
    for g in grads:
        carry, _ = jax.jit(step)(carry, g)
    jax.tree.map(np.testing.assert_array_equal, scanned, carry[0])
