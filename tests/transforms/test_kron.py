"""timm's Kron beyond the generic suites (which run the record's example and variants against
timm driven by our draws, `registry` field `draws`): the draws themselves, a balancing step,
dtype options given as torch dtypes, a callable update probability, timm's default schedule,
and timm's optimizer names."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like.optimizers.kron import kron_with_seed
from optax_like.registry import import_reference_module
from optax_like.transforms.kron import (
    _BALANCE_PROB,
    diagonal_dims,
    drive_reference,
    kron_draws,
    precond_update_prob_schedule,
    safe_flatten_shape,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

kron_module = import_reference_module("timm.optim.kron")
SHAPES = ((4, 3), (5,), (2, 3, 2), ())


def _problem(dtype, shapes=SHAPES, steps=12, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def _parity(kwargs, dtype, rtol, *, shapes=SHAPES, steps=12, seed=1337, ours=None):
    """Steps timm's Kron (driven by our draws for `seed`) and `ol.kron` on the same gradients;
    returns the worst relative error (floor 1) over the steps and both final states."""
    with jax.enable_x64(dtype == "float64"):
        init, grads = _problem(dtype, shapes, steps)
        tp = [torch.tensor(p, requires_grad=True) for p in init]
        ref = drive_reference(kron_module.Kron(tp, **kwargs), seed=seed)
        tx = kron_with_seed(seed, **(kwargs if ours is None else ours))
        params: Any = [jnp.asarray(p) for p in init]
        state: Any = tx.init(params)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        worst = 0.0
        for t in range(steps):
            for p, g in zip(tp, grads[t]):
                p.grad = torch.tensor(g)
            ref.step()
            updates, state = step([jnp.asarray(g) for g in grads[t]], state, params)
            params = ol.apply_updates(params, updates)
            for a, b in zip(params, tp):
                b = b.detach().float().numpy() if b.dtype == torch.bfloat16 else b.detach().numpy()
                a = np.asarray(a, np.float64)
                err = np.abs(a - b) / (np.abs(b) + 1)
                worst = max(worst, float(err.max()) if err.size else 0.0)
        print(f"worst relative error {worst:.3e}")
        assert worst <= rtol, f"relative error {worst:.3e} > {rtol:.0e}"
        return worst, state[0], ref


def test_draws_are_a_pure_function_of_seed_index_and_step():
    a = kron_draws(3, 1, 5, (4, 3), jnp.float32)
    b = kron_draws(3, 1, 5, (4, 3), jnp.float32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.V.shape == (4, 3) and a.V.dtype == jnp.float32 and a.balance.shape == ()
    others = [kron_draws(4, 1, 5, (4, 3), jnp.float32), kron_draws(3, 2, 5, (4, 3), jnp.float32),
              kron_draws(3, 1, 6, (4, 3), jnp.float32)]
    assert all(not np.array_equal(np.asarray(o.V), np.asarray(a.V)) for o in others)
    assert 0.0 <= float(a.balance) < 1.0 and 0.0 <= float(a.weight_decay) < 1.0


def _balancing_seed(steps, index=0, shape=(4, 3)):
    """A seed whose draws balance param `index` (a 2-D param) within `steps` steps."""
    for seed in range(200):
        if any(float(kron_draws(seed, index, t, shape, jnp.float32).balance) < _BALANCE_PROB
               for t in range(1, steps + 1)):
            return seed
    raise AssertionError("no balancing seed")


def test_a_balancing_step_matches_timm():
    """timm balances a param's factors (`_balance_Q`) when its uniform draw is below 0.01 at a
    preconditioner update: a seed whose draws do so for the (4, 3) param within 12 steps."""
    seed = _balancing_seed(12)
    worst, _, _ = _parity(dict(lr=1e-2, weight_decay=1e-2, precond_init_scale=3.0), "float64", 1e-12, seed=seed)
    assert worst < 1e-14
    _parity(dict(lr=1e-2, weight_decay=1e-2, precond_init_scale=3.0), "float32", 1e-5, seed=seed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_callable_update_probability_matches_timm(dtype):
    """A callable probability gets timm's step (ours: the traced step count; jnp-compatible)."""
    prob = lambda n: 1.0 / (1 + n % 3)  # noqa: E731 (updates at counter >= 1, 2, 3, ...)
    _parity(dict(lr=1e-2, preconditioner_update_probability=prob), dtype, 1e-12 if dtype == "float64" else 1e-5)


def test_deterministic_flag_matches_timm():
    """timm's `deterministic` seeds a generator per probe from its Python stream; with our draws
    the probes are ours either way (`deterministic` is accepted and ignored here)."""
    _parity(dict(lr=1e-2, deterministic=True), "float64", 1e-12)


@pytest.mark.parametrize("mu, precond, dtype, rtol", [
    # measured 1.8e-5: a bfloat16 momentum on both sides, whose entries may round to neighbours
    # (float32 ulps of the product and sum before the rounding), 1/256 of a step apart
    (torch.bfloat16, None, "float32", 1e-4),
    (None, torch.float32, "float64", 1e-7),  # measured 8.6e-9: float32 preconditioner for float64 params
    (torch.float32, torch.float32, "float32", 1e-6),  # measured 3.2e-8
])
def test_dtype_options_given_as_torch_dtypes_match_timm(mu, precond, dtype, rtol):
    """`mu_dtype` / `precond_dtype` as timm takes them (torch dtypes, read here by name); the
    state holds them in those dtypes, as timm's, and its state dict loads into timm."""
    kwargs = dict(lr=1e-2, mu_dtype=mu, precond_dtype=precond)
    _, state, ref = _parity(kwargs, dtype, rtol)
    for i, p in enumerate(ref.param_groups[0]["params"]):
        theirs = ref.state[p]
        assert str(state.momentum_buffer[i].dtype) == str(theirs["momentum_buffer"].dtype).removeprefix("torch.")
        assert [str(q.dtype) for q in state.Q[i]] == [str(q.dtype).removeprefix("torch.") for q in theirs["Q"]]


def test_default_schedule_is_timms_float32_math():
    """`precond_update_prob_schedule` in float32 as timm's (`torch.tensor(n, float32)`): the same
    thresholds `1 / prob` over the anneal (steps 0..6000)."""
    n = np.arange(6000)
    ours = np.asarray(jax.jit(precond_update_prob_schedule)(jnp.asarray(n)))
    theirs = np.array([kron_module.precond_update_prob_schedule(int(k)).item() for k in n], np.float32)
    assert np.max(np.abs(ours - theirs) / theirs) <= 2 ** -23  # exp: at most one float32 ulp apart
    # the update decisions a counter makes (counter >= 1 / prob for counters up to 40) are the same
    for counter in range(1, 41):
        assert np.array_equal(counter >= 1 / ours, counter >= 1 / theirs)


def test_structure_is_timms():
    """Which dims get diagonal factors and how `flatten` reshapes, as timm's `_init_Q_exprs` and
    `safe_flatten` (their einsum expressions are checked by the parity runs)."""
    for shape in [(), (5,), (1, 4), (4, 3), (3, 4), (2, 3, 2), (4, 4), (2049, 3), (3, 3, 5, 2)]:
        t = torch.zeros(shape)
        for mode in (None, "one_diag", "smart_one_diag", "all_diag"):
            for max_size, min_ndim in ((2048, 2), (3, 1)):
                q, _ = kron_module._init_Q_exprs(t, 1.0, max_size, min_ndim, mode)
                diag = diagonal_dims(shape, max_size, min_ndim, mode)
                assert [x.dim() < 2 for x in q] == (list(diag) if shape else [True]), (shape, mode)
        for start, end in ((2, -1), (0, -1), (1, 2), (0, 0)):
            assert safe_flatten_shape(shape, start, end) == tuple(kron_module.safe_flatten(t, start, end).shape)
    with pytest.raises(ValueError, match="Invalid memory_save_mode"):
        ol.kron(memory_save_mode="two_diag")


@pytest.mark.parametrize("name", ["kron", "kronw", "kronc"])
def test_timm_names_resolve_to_kron(name, x64):
    """`create_optimizer_v2(params, opt=name)` for timm's Kron names (a list of params: no
    grouping): timm's class with the name's options and `momentum` (timm's name table), driven
    by our draws, and ours step the same."""
    from optax_like.optim import grouping
    from optax_like.param_groups._timm import TIMM_OPTIMIZERS

    reference, kind, options = TIMM_OPTIMIZERS[name]
    assert reference == "timm.optim.kron.Kron" and "m" in kind
    init, grads = _problem("float64", SHAPES, 6)
    tp = [torch.tensor(p, requires_grad=True) for p in init]
    theirs = drive_reference(kron_module.Kron(tp, lr=1e-2, weight_decay=0.05, momentum=0.9, **options))
    ours = grouping.create_optimizer_v2([jnp.asarray(p) for p in init], name, lr=1e-2, weight_decay=0.05)
    assert type(ours).__name__ == "Kron"
    for g in grads:
        for p, gi in zip(tp, g):
            p.grad = torch.tensor(gi)
        theirs.step()
        ours.zero_grad()
        ours.backward([jnp.asarray(gi) for gi in g])
        ours.step()
    for a, b in zip(ours.params, tp):
        np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert {k: ours.param_groups[0][k] for k in options} == options
