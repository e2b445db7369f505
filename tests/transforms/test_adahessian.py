"""timm's Adahessian (timm.optim.adahessian, 1.0.31) against `optax_like.adahessian`, functional view.

What the generic suites cannot express: a step differentiates a loss twice (Hessian-vector
products), and the probes are random. The reference is made to draw OUR probes: for one timm
step, `torch.randint` as timm's module sees it returns the Rademacher bits that
`adahessian_probes` (the pure function our update calls) gives for the state before our step,
in timm's call order (per sample, per param that recomputes, groups in order); the patch checks
each requested size and that every queued probe is drawn (so the selection of params that
recompute is timm's too). The loss is smooth with nonzero third derivatives and couples the
params (a 4-D one for `avg_conv_kernel`), identical in torch and JAX.
"""

from __future__ import annotations

import contextlib
import functools
import unittest.mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import registry
from optax_like.transforms.adahessian import ScaleByAdahessianState, adahessian_probes, adahessian_selection

INFO = registry.OPTIMIZERS["adahessian"]
SHAPES = INFO.shapes  # (4, 3), (3,), (2, 3, 2, 2), ()
STEPS = 12
# measured worst relative errors (floor 1) over 12 steps, functional view: float64 <= 2.8e-14
# (conv; 5.6e-15 elsewhere), float32 <= 2.1e-6 (conv: the 2x2 kernel means sum in another order;
# 1.2e-6 elsewhere: the Hessian-vector products round a few ulps apart, forward over reverse
# against timm's reverse over reverse, and the lr=0.1 steps carry it)
RTOL = {"float64": 1e-12, "float32": 4e-6}
CONFIGS = {
    "example": dict(INFO.example),
    **{name: INFO.variant_kwargs(name) for name in INFO.variants},
    "all": dict(lr=0.05, weight_decay=0.1, hessian_power=0.5, update_each=3, n_samples=2, avg_conv_kernel=True,
                betas=(0.8, 0.99)),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def reference_module():
    return registry.import_reference_module("timm.optim.adahessian")


def init_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.5 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]


def loss(params, lib, dtype):
    """A smooth loss coupling the params (nonzero third derivatives), in torch or jnp."""
    W, b, K, c = params
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(dtype)
    d = rng.uniform(0.5, 1.5, (2, 3, 2, 2)).astype(dtype)
    x, d = (jnp.asarray(x), jnp.asarray(d)) if lib is jnp else (torch.tensor(x), torch.tensor(d))
    h = lib.tanh(x @ W + b)
    k = (K * d).reshape(2, 12)
    return (lib.sum(h ** 3) + lib.sum(k ** 4) * 0.25 + lib.sum(lib.sin(k)) * lib.sum(b) + c ** 4
            + c * lib.sum(W) + lib.sum(K) * c)


@contextlib.contextmanager
def feeding(queue: list):
    """`torch.randint`, as timm's adahessian module calls it, returns the queued bits (int64)."""
    def fake(low, high, size, generator=None, device=None, **kwargs):
        assert (low, high) == (0, 2) and queue, "timm drew more probes than ours"
        bits = queue.pop(0)
        assert tuple(bits.shape) == tuple(size), (bits.shape, size)
        return torch.tensor(bits, dtype=torch.int64)

    with unittest.mock.patch.object(reference_module().torch, "randint", fake):
        yield
    assert not queue, f"timm drew {len(queue)} probes fewer than ours"


def adahessian_node(state) -> ScaleByAdahessianState:
    found = [x for x in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, ScaleByAdahessianState))
             if isinstance(x, ScaleByAdahessianState)]
    assert len(found) == 1
    return found[0]


def probe_bits(groups, n_samples, update_each) -> list:
    """The bits timm must draw for our next step: `groups` = [(adahessian state, grads)] in group
    order (group g's probes with stream g, as the adapter draws them); timm's call order."""
    drawn = []
    for g, (state, grads) in enumerate(groups):
        probes = adahessian_probes(state, grads, n_samples=n_samples, update_each=update_each, stream=g)
        chosen = [bool(s) for s in adahessian_selection(state, grads, update_each)]
        drawn.append((probes, chosen))
    queue = []
    for s in range(n_samples):
        for probes, chosen in drawn:
            queue += [((np.asarray(z) + 1) // 2).astype(np.int64)
                      for z, c in zip(jax.tree.leaves(probes[s]), chosen) if c]
    return queue


def torch_closure(opt, params, dtype):
    def closure():
        opt.zero_grad()
        value = loss(params, torch, dtype)
        value.backward(create_graph=True)
        return value
    return closure


def worst_error(ours, theirs) -> float:
    out = 0.0
    for a, b in zip(ours, theirs):
        b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        out = max(out, float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(np.abs(b), 1), initial=0)))
    return out


def functional_run(kwargs, dtype, steps=STEPS):
    """Ours (jitted `update(..., value_fn=loss)`) and timm's params after each step: the worst error."""
    p0 = init_params(dtype)
    tparams = [torch.tensor(p, requires_grad=True) for p in p0]
    ref = INFO.new_reference(tparams, **kwargs)
    tx = INFO.factory(**kwargs)
    params = [jnp.asarray(p) for p in p0]
    state = tx.init(params)
    value_fn = functools.partial(loss, lib=jnp, dtype=dtype)

    @jax.jit
    def step(params, state):
        grads = jax.grad(value_fn)(params)
        updates, state = tx.update(grads, state, params, value_fn=value_fn)
        return ol.apply_updates(params, updates), state

    worst = 0.0
    for _ in range(steps):
        grads = jax.grad(value_fn)(params)
        queue = probe_bits([(adahessian_node(state), grads)], kwargs.get("n_samples", 1), kwargs.get("update_each", 1))
        with feeding(queue):
            ref.step(torch_closure(ref, tparams, dtype))
        params, state = step(params, state)
        worst = max(worst, worst_error(params, tparams))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_functional_matches_timm_on_our_probes(config, dtype):
    with jax.enable_x64(dtype == "float64"):
        assert functional_run(CONFIGS[config], dtype) <= RTOL[dtype]


def test_example_float64_matches_timm(x64):
    assert functional_run(dict(INFO.example), "float64", steps=4) <= RTOL["float64"]


def test_hutchinson_is_the_mean_of_z_hz_and_exact_for_a_diagonal_hessian(x64):
    """`hutchinson` on a separable loss (diagonal Hessian): z * (H z) = diag(H) for every probe."""
    params = {"a": jnp.arange(1.0, 7.0).reshape(2, 3), "b": jnp.asarray(0.5)}
    value_fn = lambda p: jnp.sum(p["a"] ** 4) + p["b"] ** 3  # noqa: E731
    est = ol.hutchinson(value_fn, params, jax.random.PRNGKey(0), n_samples=3)
    np.testing.assert_allclose(est["a"], 12 * params["a"] ** 2, rtol=1e-14)
    np.testing.assert_allclose(est["b"], 6 * 0.5, rtol=1e-14)
    probes = ol.rademacher_probes(jax.random.PRNGKey(1), params, 2)
    assert len(probes) == 2 and all(set(np.unique(np.asarray(z["a"]))) <= {-1.0, 1.0} for z in probes)


def test_update_each_keeps_the_stale_estimate_and_skips_the_products(x64):
    """With update_each=3, only steps 1, 4, 7 recompute (a cond skips the products between); the
    stale estimate is kept in the state."""
    tx = ol.adahessian(lr=0.01, update_each=3)
    params = [jnp.asarray(p) for p in init_params("float64")]
    value_fn = functools.partial(loss, lib=jnp, dtype="float64")
    state = tx.init(params)
    hessians = []
    for _ in range(5):
        grads = jax.grad(value_fn)(params)
        updates, state = tx.update(grads, state, params, value_fn=value_fn)
        params = ol.apply_updates(params, updates)
        hessians.append(adahessian_node(state).hess)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(a, b))  # noqa: E731
    assert same(hessians[0], hessians[1]) and same(hessians[1], hessians[2]) and not same(hessians[2], hessians[3])
    assert adahessian_node(state).hessian_step.tolist() == [5] * 4


def test_update_needs_the_loss_or_the_estimate():
    tx = ol.adahessian()
    params = [jnp.ones(3)]
    state = tx.init(params)
    with pytest.raises(TypeError, match="value_fn="):
        tx.update([jnp.ones(3)], state, params)


def test_complex_params_refused():
    with pytest.raises(TypeError, match=INFO.complex_refused_here.split(" (")[0]):
        ol.adahessian().init([jnp.ones(3, jnp.complex64)])


@pytest.mark.parametrize("kwargs", INFO.invalid, ids=str)
def test_invalid_arguments_raise_timms_errors(kwargs):
    def catch(fn):
        try:
            fn()
        except Exception as error:  # noqa: BLE001
            return type(error), str(error)
        return None

    theirs = catch(lambda: reference_module().Adahessian([torch.nn.Parameter(torch.ones(2))], **kwargs))
    ours = catch(lambda: ol.adahessian(**kwargs))
    assert theirs is not None and ours == theirs


def _skips_c(t):
    """The None-gradient run: the scalar param `c` (last) is left out of the loss at these steps."""
    return t % 3 == 1


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_none_gradients_skip_the_param_and_its_hessian_step_as_timm(dtype):
    """A param without gradient at some steps (timm: grad None, skipped, its 'hessian step' not
    counted; here a None gradient with per-leaf counters): with update_each=2 the params' hessian
    steps drift apart, so a step recomputes some params' estimates only (probes masked), as timm's."""
    kwargs = dict(lr=0.05, weight_decay=0.1, update_each=2, n_samples=2)
    with jax.enable_x64(dtype == "float64"):
        p0 = init_params(dtype)
        tparams = [torch.tensor(p, requires_grad=True) for p in p0]
        ref = INFO.new_reference(tparams, **kwargs)
        tx = INFO.factory(**kwargs)
        params = [jnp.asarray(p) for p in p0]
        state = ol.per_leaf_scalars(tx.init(params))
        structure = jax.tree.structure(state)

        def value_fns(skip):
            def value_fn(ps):
                W, b, K, c = ps
                return loss([W, b, K, jax.lax.stop_gradient(c) * 0 + 0.3] if skip else ps, jnp, dtype)
            return value_fn

        steps = {skip: jax.jit(lambda g, s, p, skip=skip: tx.update(g, s, p, value_fn=value_fns(skip)))
                 for skip in (False, True)}
        for t in range(8):
            value_fn = value_fns(_skips_c(t))
            grads = jax.grad(value_fn)(params)
            if _skips_c(t):
                grads = [*grads[:3], None]
            queue = probe_bits([(adahessian_node(state), grads)], 2, 2)

            def closure(t=t):
                ref.zero_grad()
                W, b, K, c = tparams
                value = loss([W, b, K, torch.tensor(0.3, dtype=c.dtype)] if _skips_c(t) else tparams, torch, dtype)
                value.backward(create_graph=True)
                return value

            with feeding(queue):
                ref.step(closure)
            updates, state = steps[_skips_c(t)](grads, state, params)
            params = ol.apply_updates(params, updates)
            assert jax.tree.structure(state) == structure
            assert worst_error(params, tparams) <= RTOL[dtype]
        steps = [ref.state[p]["hessian step"] for p in tparams]
        assert adahessian_node(state).hessian_step.tolist() == steps and len(set(steps)) == 2


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_no_probe_refused_at_construction_in_every_view():
    """timm accepts `n_samples=0` and fails at its first step (no probe: its estimate stays the
    float 0.0, `addcmul_()` TypeError); ours refuses it when built, naming the argument, in
    the factory, the transform, the class and the probe functions (not deep inside a step)."""
    from optax_like.transforms.adahessian import rademacher_probes, scale_by_adahessian

    p = torch.nn.Parameter(torch.ones(3))
    opt = reference_module().Adahessian([p], n_samples=0)  # accepted
    (p ** 3).sum().backward(create_graph=True)
    with pytest.raises(TypeError, match="addcmul_"):
        opt.step()
    message = "n_samples must be a positive int, got 0"
    for make in (lambda: ol.adahessian(n_samples=0), lambda: scale_by_adahessian(n_samples=0),
                 lambda: ol.optim.Adahessian([jnp.ones(3)], n_samples=0),
                 lambda: ol.hutchinson(lambda x: jnp.sum(x ** 3), jnp.ones(3), jax.random.PRNGKey(0), n_samples=0),
                 lambda: rademacher_probes(jax.random.PRNGKey(0), [jnp.ones(3)], 0)):
        with pytest.raises(ValueError, match=message):
            make()
