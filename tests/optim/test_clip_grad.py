"""optax_like.optim.clip_grad against torch.nn.utils.clip_grad_norm_ / clip_grad_value_ (live)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from optax_like import optim

SHAPES = [(3, 4), (5,), ()]


def _setup(dtype, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    grads = [scale * rng.standard_normal(s) for s in SHAPES]
    tparams = [torch.tensor(v, requires_grad=True) for v in values]
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    jdt = jnp.dtype(dtype)
    if dtype == "float32":
        for p in tparams:
            p.data, p.grad = p.data.float(), p.grad.float()
    params = [jnp.asarray(v, jdt) for v in values]
    return tparams, params, [jnp.asarray(g, jdt) for g in grads]


def _close(ours, theirs, dtype):
    rtol = 1e-12 if dtype == "float64" else 4e-7
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=rtol, atol=0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(parity_dtype, norm_type, max_norm):
    tparams, params, grads = _setup(parity_dtype)
    opt = optim.SGD(params, lr=0.1)
    opt.backward(grads)
    total = optim.clip_grad_norm_(opt, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert isinstance(total, jax.Array) and total.dtype == jnp.dtype(parity_dtype)
    _close(total, ttotal, parity_dtype)
    for g, p in zip(opt.grad, tparams):
        _close(g, p.grad, parity_dtype)
    opt.step()
    torch.optim.SGD(tparams, lr=0.1).step()
    for ours, p in zip(opt.params, tparams):
        _close(ours, p, parity_dtype)


def test_clip_grad_norm_skips_params_without_gradient_and_accepts_inf_string():
    tparams, params, grads = _setup("float32", seed=1)
    tparams[1].grad = None
    opt = optim.SGD(params, lr=0.1)
    opt.backward([grads[0], None, grads[2]])
    total = optim.clip_grad_norm_(opt, 0.1, norm_type="inf")
    _close(total, torch.nn.utils.clip_grad_norm_(tparams, 0.1, norm_type="inf"), "float32")
    assert opt.grad[1] is None
    _close(opt.grad[0], tparams[0].grad, "float32")


def test_clip_grad_norm_with_no_pending_gradient_is_torchs_zero():
    opt = optim.SGD([jnp.ones(3)], lr=0.1)
    total = optim.clip_grad_norm_(opt, 1.0)
    assert float(total) == 0.0 and total.dtype == jnp.float32
    assert opt.grad == [None]


def test_nonfinite_total_norm_raises_torchs_error_and_keeps_the_gradients():
    tparams, params, grads = _setup("float32")
    grads[1] = grads[1].at[0].set(jnp.nan)
    tparams[1].grad[0] = float("nan")
    opt = optim.SGD(params, lr=0.1)
    opt.backward(grads)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.clip_grad_norm_(tparams, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as ours:
        optim.clip_grad_norm_(opt, 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)
    np.testing.assert_array_equal(np.asarray(opt.grad[0]), np.asarray(grads[0]))
    # Without the flag the non-finite norm scales the gradients, as torch's.
    total = optim.clip_grad_norm_(opt, 1.0)
    assert np.isnan(float(total)) and np.isnan(np.asarray(opt.grad[0])).all()


@pytest.mark.parametrize("clip_value", [0.3, 5.0])
def test_clip_grad_value_matches_torch(parity_dtype, clip_value):
    tparams, params, grads = _setup(parity_dtype, scale=2.0)
    opt = optim.SGD(params, lr=0.1)
    opt.backward(grads)
    assert optim.clip_grad_value_(opt, clip_value) is None
    torch.nn.utils.clip_grad_value_(tparams, clip_value)
    for g, p in zip(opt.grad, tparams):
        _close(g, p.grad, parity_dtype)


def _loss(params, x):
    return sum(jnp.sum(jnp.sin(p * x) * 3.0) for p in params)


def test_step_clips_inside_the_jitted_step_as_clip_grad_norm_(x64):
    _, params, _ = _setup("float64", seed=3)
    x = jnp.asarray(1.7)
    eager = optim.AdamW([jnp.copy(p) for p in params], lr=0.05, weight_decay=0.1)
    fused = optim.AdamW([jnp.copy(p) for p in params], lr=0.05, weight_decay=0.1)
    for _ in range(3):
        eager.zero_grad()
        eager.backward(jax.grad(_loss)(eager.params, x))
        norm = optim.clip_grad_norm_(eager, 0.25, norm_type=1.0)
        eager.step()
        fused.step(_loss, x, clip_grad_norm=0.25, norm_type=1.0)
        np.testing.assert_allclose(np.asarray(fused.last_grad_norm), np.asarray(norm), rtol=1e-13)
    for a, b in zip(eager.params, fused.params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13)


def test_step_clip_grad_value_and_its_errors():
    _, params, _ = _setup("float32", seed=4)
    x = jnp.asarray(2.0)
    a = optim.SGD([jnp.copy(p) for p in params], lr=0.1)
    b = optim.SGD([jnp.copy(p) for p in params], lr=0.1)
    a.backward(jax.grad(_loss)(a.params, x))
    optim.clip_grad_value_(a, 0.5)
    a.step()
    b.step(_loss, x, clip_grad_value=0.5)
    assert b.last_grad_norm is None
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
    with pytest.raises(ValueError, match="not both"):
        b.step(_loss, x, clip_grad_value=0.5, clip_grad_norm=1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        b.step(_loss, x, clip=1.0)


def test_params_spelling_clips_those_params_gradients_as_torch():
    # torch's habit: clip_grad_norm_(model.parameters(), max_norm) -> here optimizer.params (or a
    # part of it): the total norm and the scaling cover those params only.
    params = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([1.0]), "frozen": jnp.array([2.0])}
    opt = optim.SGD([params["a"], params["b"]], lr=0.1, model=params)
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0]), "frozen": None}
    ta, tb = torch.tensor([3.0, 4.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    for part, torch_part in ((opt.params, [ta, tb]), (opt.params["a"], [ta])):
        opt.zero_grad()
        opt.backward(grads)
        ta.grad, tb.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])
        total = optim.clip_grad_norm_(part, 0.25)
        np.testing.assert_allclose(np.asarray(total), torch.nn.utils.clip_grad_norm_(torch_part, 0.25).numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(opt.grad["a"]), ta.grad.numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(opt.grad["b"]), tb.grad.numpy(), rtol=1e-6)
    optim.clip_grad_value_(opt.params["b"], 0.5)
    assert float(opt.grad["b"][0]) == 0.5
    stale = opt.params
    opt.step()
    with pytest.raises(TypeError, match="donated to an earlier step: read optimizer.params again"):
        optim.clip_grad_norm_(stale, 1.0)
    with pytest.raises(TypeError, match="pass the optimizer"):
        optim.clip_grad_norm_([jnp.ones(2)], 1.0)
