"""The pieces of `transforms/schedule_free.py` the parity suite cannot isolate: the wide
(double-float) scalar arithmetic that stands in for schedulefree's float64 host math, the
fused multiply-add torch's kernels use, and the state's structure."""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like.core.base import apply_updates
from optax_like.core.leaf_scalars import NoneGradientError, per_leaf_scalars
from optax_like.optimizers.schedule_free import schedule_free_adamw, schedule_free_eval_params, schedule_free_sgd
from optax_like.transforms.schedule_free import ScheduleFreeGroup, _fma, _Wide


def _value(pair):
    return float(np.float64(np.asarray(pair[0])) + np.float64(np.asarray(pair[1])))


def test_wide_arithmetic_under_jit_matches_float64():
    """TwoSum and Dekker products survive XLA (constant folding of `(x + C) - C`, FMA
    contraction of `p + e`): jitted results agree with eager ones (the cross terms of a
    product may be contracted: ~2**-46 relative) and with float64."""
    def f(n):
        w = _Wide()
        one = w.host(1.0)
        c = w.div(one, w.integer(n))
        return w.mul(w.host(0.01), w.sub(w.mul(w.host(0.9), w.sub(one, c)), one)), w.sqrt(w.integer(n))

    for n in (1, 2, 3, 7, 1000, 123457):
        eager, jitted = f(jnp.asarray(n, jnp.int32)), jax.jit(f)(jnp.asarray(n, jnp.int32))
        for a, b in zip(eager, jitted):
            assert a[0] == b[0] and abs(_value(a) - _value(b)) <= 4e-14 * abs(_value(a))
        alpha = 0.01 * (0.9 * (1 - 1 / n) - 1)
        assert abs(_value(jitted[0]) - alpha) <= 4e-14 * abs(alpha)
        assert np.float32(alpha) == jitted[0][0]  # rounded once, as torch rounds the Python float
        assert abs(_value(jitted[1]) - np.sqrt(n)) <= 1e-13 * np.sqrt(n)


def test_power_count_matches_float64_pow():
    f = jax.jit(lambda n: _Wide().power_count(_Wide().host(0.999), n))
    for n in (1, 2, 10, 1000, 10_000, 2**20):
        # beta2 itself is held to ~2**-48 (two float32 words): the power to ~n * 4e-15
        assert abs(_value(f(jnp.asarray(n, jnp.int32))) - 0.999**n) <= max(n, 10) * 1e-14 * 0.999**n


def test_a_precise_beta_is_held_to_its_float64_value():
    """The adapter hands betas as `PreciseScalar`s (float32 value, its float64 `1 - x` rounded
    once): `1 - beta2**t` built from float32(0.999) was 6e-5 relative off at the first step,
    against the moment's exact `1 - beta2` (27 ulps in schedulefree's AdamW step). A beta of
    0.5 or more is taken as `1 - (1 - x)`, a beta below from its value."""
    from optax_like.core import numerics

    f = jax.jit(lambda b, n: _Wide().power_count(_Wide().of(b), n))
    for beta in (0.999, 0.9999, 0.9, 0.5, 0.3, 1e-3):
        b = numerics.precise_scalar(beta, jnp.float32)
        for n in (1, 2, 100, 10_000):
            exact = beta ** n
            got = _value(f(b, jnp.asarray(n, jnp.int32)))
            # held to ~2**-26 of beta: `1 - beta**n` to ~2**-26 of (1 - beta) * n, relative
            assert abs((1 - got) - (1 - exact)) <= 2.0 ** -24 * (1 - exact) + 1e-13, (beta, n)


def test_the_adapter_beta2_gives_schedulefrees_float32_step():
    """float32 (x64 off) `AdamWScheduleFree` with torch's default betas: schedulefree's params to
    an ulp of their scale over 50 steps (measured 0.5; 23.5 before betas were held wide)."""
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    from optax_like import optim

    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(7).astype(np.float32)
    kw = dict(lr=0.0625, betas=(0.9, 0.999), warmup_steps=3)
    t = torch.tensor(x0, requires_grad=True)
    ref = schedulefree.AdamWScheduleFree([t], **kw)
    ref.train()
    ours = optim.AdamWScheduleFree([jnp.asarray(x0)], **kw)
    ours.train()
    for _ in range(50):
        g = rng.standard_normal(7).astype(np.float32)
        t.grad = torch.tensor(g)
        ref.step()
        ours.zero_grad()
        ours.backward([jnp.asarray(g)])
        ours.step()
        theirs, mine = t.detach().numpy(), np.asarray(ours.params[0])
        ulps = np.max(np.abs(mine - theirs)) / np.spacing(np.max(np.abs(theirs)))
        assert ulps <= 1, ulps


def test_weight_sum_does_not_drift_over_10k_steps():
    """weight_sum (a float64 Python float in schedulefree) kept as a float32 pair: after 10k
    steps of warmup + r=0.5 it equals float64 accumulation to ~1e-14 relative; a float32
    running sum would be off by ~1e-4."""
    tx = schedule_free_sgd(lr=0.1, warmup_steps=500, r=0.5)
    params = jnp.zeros((1,))
    state = tx.init(params)

    def body(carry, _):
        p, s = carry
        u, s = tx.update(jnp.ones((1,)), s, p)
        return (apply_updates(p, u), s), None

    (_, state), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=10_000))((params, state))
    ws, lr_max = 0.0, -1.0
    for k in range(10_000):
        sched = (k + 1) / 500 if k < 500 else 1.0
        lr_max = max(0.1 * sched, lr_max)
        ws += (k + 1) ** 0.5 * lr_max**2.0
    g = state[0].group
    assert int(g.k) == 10_000
    assert abs(_value((g.weight_sum, g.weight_sum_lo)) - ws) <= 1e-13 * ws
    assert _value((g.lr_max, g.lr_max_lo)) == pytest.approx(0.1, rel=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_is_rounded_once(dtype):
    with jax.enable_x64(dtype == "float64"):
        rng = np.random.default_rng(0)
        a, b, c = (rng.standard_normal(500).astype(dtype) for _ in range(3))
        got = np.asarray(jax.jit(_fma)(jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)))
        exact = np.array([Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)) for x, y, z in zip(a, b, c)])
        want = np.array([float(e) for e in exact]).astype(dtype) if dtype == "float64" else \
            np.array([np.float32(float(e)) for e in exact])
        assert np.sum(got != want) <= (2 if dtype == "float32" else 0)  # float32: double rounding via float() only


def test_state_structure_none_gradients_and_eval_identity():
    params = {"a": jnp.ones((3,)), "b": jnp.full((2,), 2.0), "frozen": None}
    tx = schedule_free_adamw(lr=0.1)
    state = tx.init(params)
    grads = {"a": jnp.ones((3,)), "b": None, "frozen": None}
    with pytest.raises(NoneGradientError):
        tx.update(grads, state, params)  # shared per-param counters: per_leaf_scalars needed
    state = per_leaf_scalars(state)
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert updates["b"] is None and updates["frozen"] is None
    assert int(new_state[0].group.k) == 1
    params = apply_updates(params, updates)
    x = schedule_free_eval_params(new_state, params)
    np.testing.assert_array_equal(x["b"], params["b"])  # never stepped: no z in schedulefree
    assert x["frozen"] is None
    assert isinstance(new_state[0].group, ScheduleFreeGroup)


def test_group_entries_round_trip_and_checks():
    """The group-form declaration: schedulefree's param group entries out (Python values, the
    wide pairs summed in float64) and back in, checked, naming the key."""
    from optax_like.optim import _state_dict

    tx = schedule_free_sgd(lr=0.1, warmup_steps=3)
    params = [jnp.ones((3,))]
    state = tx.init(params)
    for _ in range(2):
        u, state = tx.update([jnp.ones((3,))], state, params)
    entries = _state_dict.export_group_entries(state)
    assert entries == {"k": 2, "weight_sum": pytest.approx(0.1**2 / 9 + 0.2**2 / 9, rel=1e-14),
                       "lr_max": pytest.approx(0.2 / 3, rel=1e-14), "scheduled_lr": pytest.approx(0.2 / 3, rel=1e-14)}
    assert type(entries["k"]) is int and all(type(entries[k]) is float for k in ("weight_sum", "lr_max"))
    assert _state_dict.group_keys(state) == ("k", "weight_sum", "lr_max", "scheduled_lr")
    assert _state_dict.export_state(state, jax.tree.structure(params), params)[0].keys() == {"z"}
    loaded = _state_dict.import_group_entries(tx.init(params), entries)
    assert _state_dict.export_group_entries(loaded) == entries
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    for bad, match in ((dict(k=-1), "'k' must be an integer"), (dict(k=1.5), "'k' must be"),
                       (dict(weight_sum=float("nan")), "'weight_sum' must be finite"),
                       (dict(lr_max="x"), "'lr_max' must be a real number")):
        with pytest.raises((ValueError, TypeError), match=match):
            _state_dict.import_group_entries(state, bad)
