"""transforms/mixed_precision.py: torch's GradScaler kernels, and `loss_scaling` against torch (issue #27).

- `update_loss_scale` against `torch._amp_update_scale_` over random found_inf sequences (every
  growth interval from 1 to 5, factors exact in float32 and not, growth past float32's max);
- `unscale_grads` against `torch._amp_foreach_non_finite_check_and_unscale_` (float32, bfloat16,
  float64; inf and nan; scales that are not powers of two);
- `loss_scaling(inner)` in a jitted train step and in `lax.scan`, against torch's AMP loop with
  inf/nan injected into chosen batches: the scale trajectory, the skips and the params.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like.transforms.mixed_precision import (
    LossScaleState,
    init_loss_scale,
    loss_scaling,
    scale_loss,
    unscale_grads,
    update_loss_scale,
)

_update = jax.jit(update_loss_scale, static_argnums=())


@pytest.mark.parametrize("interval", [1, 2, 3, 5])
@pytest.mark.parametrize("factors", [(2.0, 0.5), (1.5, 0.25), (4.0, 0.75)])
def test_update_matches_torch_kernel(interval, factors):
    growth, backoff = factors
    rng = np.random.default_rng(interval)
    ours = init_loss_scale(2.0**16)
    scale, tracker = torch.full((), 2.0**16), torch.zeros((), dtype=torch.int32)
    for k in range(300):
        found = float(rng.random() < 0.25) * (1 + k % 2)  # torch adds the optimizers' flags: 2.0 counts too
        torch._amp_update_scale_(scale, tracker, torch.full((), found), growth, backoff, interval)
        if scale.item() < np.finfo(np.float32).tiny:
            break  # a subnormal scale: XLA:CPU flushes it to zero (torch keeps it); see update_loss_scale
        ours = _update(ours, jnp.float32(found), growth, backoff, interval)
        assert (float(ours.scale), int(ours.growth_tracker)) == (scale.item(), tracker.item()), k


def test_factor_not_in_float32(x64):
    """torch multiplies the float32 scale by the float64 factor: exact under x64."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        s, f = np.float32(rng.uniform(1, 1e6)), float(rng.uniform(0.01, 0.99))
        scale, tracker = torch.full((), float(s)), torch.zeros((), dtype=torch.int32)
        torch._amp_update_scale_(scale, tracker, torch.ones(()), 2.0, f, 1)
        ours = update_loss_scale(LossScaleState(jnp.float32(s), jnp.int32(0)), jnp.float32(1), 2.0, f, 1)
        assert float(ours.scale) == scale.item()


def test_growth_never_overflows_to_inf():
    scale, tracker = torch.full((), 3.0e38), torch.zeros((), dtype=torch.int32)
    torch._amp_update_scale_(scale, tracker, torch.zeros(()), 2.0, 0.5, 1)
    ours = update_loss_scale(LossScaleState(jnp.float32(3.0e38), jnp.int32(0)), jnp.float32(0), 2.0, 0.5, 1)
    assert (float(ours.scale), int(ours.growth_tracker)) == (scale.item(), tracker.item()) == (float(np.float32(3e38)), 0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("scale", [2.0**16, 3.0, 1.0 / 3.0, 1.0, 12345.678])
def test_unscale_matches_torch_kernel(dtype, scale):
    ctx = jax.enable_x64(True) if dtype == "float64" else jax.enable_x64(False)
    with ctx:
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(s) * 1e3 for s in ((4, 3), (7,), ())]
        tdtype = getattr(torch, dtype)
        for bad in (None, np.inf, -np.inf, np.nan):
            values = [a.copy() for a in arrays]
            if bad is not None:
                values[1][2] = bad
            tgrads = [torch.tensor(v).to(tdtype) for v in values]
            found = torch.zeros(())
            inv = torch.full((), scale, dtype=torch.float32).double().reciprocal().float()
            torch._amp_foreach_non_finite_check_and_unscale_(tgrads, found, inv)
            grads = [jnp.asarray(torch.tensor(v).to(tdtype).float().numpy() if dtype == "bfloat16" else v, dtype)
                     for v in values]
            out, found_inf = jax.jit(unscale_grads)(grads + [None], jnp.float32(scale))
            assert out[-1] is None and float(found_inf) == found.item()
            for a, t in zip(out, tgrads):
                assert a.dtype == jnp.dtype(dtype)
                np.testing.assert_array_equal(np.asarray(a, np.float64), t.double().numpy())


def _problem(steps=14, bad=((2, np.inf), (3, np.inf), (9, np.nan))):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    xs = rng.standard_normal((steps, 8, 4)).astype(np.float32)
    ys = rng.standard_normal((steps, 8, 3)).astype(np.float32)
    for k, value in bad:
        xs[k, 0, 0] = value
    return w, xs, ys


def _loss(w, x, y):  # float16 matmul, float32 loss (torch's autocast recipe)
    out = x.astype(jnp.float16) @ w.astype(jnp.float16)
    return jnp.mean((out.astype(jnp.float32) - y) ** 2)


def _torch_trajectory(w, xs, ys, make_opt, clip=None, **scaler_kwargs):
    tw = torch.nn.Parameter(torch.tensor(w))
    opt = make_opt([tw])
    scaler = torch.amp.GradScaler("cpu", **scaler_kwargs)
    scales = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        out = torch.tensor(x).half() @ tw.half()
        scaler.scale(((out.float() - torch.tensor(y)) ** 2).mean()).backward()
        if clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([tw], clip)
        scaler.step(opt)
        scaler.update()
        scales.append((scaler.get_scale(), scaler._get_growth_tracker()))
    return scales, tw.detach().numpy()


@pytest.mark.parametrize("name,make_tx,make_torch", [
    ("sgd", lambda: ol.sgd(0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("adamw", lambda: ol.adamw(0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
])
def test_jitted_train_step_matches_torch(name, make_tx, make_torch):
    w, xs, ys = _problem()
    theirs, tw = _torch_trajectory(w, xs, ys, make_torch, growth_interval=3)
    tx = loss_scaling(make_tx(), growth_interval=3)

    @jax.jit
    def train_step(w, state, x, y):
        grads = jax.grad(lambda w: scale_loss(_loss(w, x, y), state.scale))(w)
        updates, state = tx.update(grads, state, w)
        return ol.apply_updates(w, updates), state

    params, state = jnp.asarray(w), tx.init(jnp.asarray(w))
    ours = []
    for x, y in zip(xs, ys):
        params, state = train_step(params, state, x, y)
        ours.append((float(state.scale), int(state.growth_tracker)))
    assert ours == theirs
    # float32 parity (the same train step without loss scaling is as far from torch: 7e-8 for sgd)
    error = float(np.max(np.abs(np.asarray(params) - tw)))
    assert error <= 1e-6, error


def test_scan_with_clipping_matches_torch():
    """`loss_scaling(chain(clip_by_global_norm, sgd))` under `lax.scan`: clipping sees unscaled
    gradients, as torch's recipe (`unscale_` then `clip_grad_norm_`)."""
    w, xs, ys = _problem()
    theirs, tw = _torch_trajectory(w, xs, ys, lambda p: torch.optim.SGD(p, lr=0.05), clip=0.5, growth_interval=2)
    tx = loss_scaling(ol.chain(ol.clip_by_global_norm(0.5), ol.sgd(0.05)), growth_interval=2)

    def body(carry, batch):
        w, state = carry
        grads = jax.grad(lambda w: scale_loss(_loss(w, *batch), state.scale))(w)
        updates, state = tx.update(grads, state, w)
        return (ol.apply_updates(w, updates), state), (state.scale, state.growth_tracker)

    (params, _), (scales, trackers) = jax.jit(lambda w, xs, ys: jax.lax.scan(
        body, (w, tx.init(w)), (xs, ys)))(jnp.asarray(w), xs, ys)
    assert list(zip(np.asarray(scales).tolist(), np.asarray(trackers).tolist())) == theirs
    assert float(np.max(np.abs(np.asarray(params) - tw))) <= 1e-5  # the clip's float32 norm: a few ulps


def test_skipped_update_leaves_params_and_inner_state_bit_for_bit():
    tx = loss_scaling(ol.adam(0.1), init_scale=4.0)
    params = {"a": jnp.asarray([-0.0, 1.0, -2.5]), "b": None}
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)({"a": jnp.asarray([1.0, jnp.nan, 0.0]), "b": None}, state, params)
    new_params = ol.apply_updates(params, updates)
    np.testing.assert_array_equal(np.signbit(new_params["a"]), np.signbit(params["a"]))
    np.testing.assert_array_equal(new_params["a"], params["a"])
    jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
    assert float(new_state.scale) == 2.0 and int(new_state.growth_tracker) == 0


# ---------------------------------------------------------------------------- compact state, stochastic rounding

from optax_like.transforms.mixed_precision import apply_updates_stochastic, compact_state, stochastic_round  # noqa: E402


def _torchao_fp32_to_bf16_sr(x: torch.Tensor, random: torch.Tensor) -> torch.Tensor:
    """torchao.optim.quant_utils._fp32_to_bf16_sr, with its random bits given."""
    x_f32_bits = x.view(torch.int32)
    x_fraction = x_f32_bits & 0xFFFF
    x_bf16_towards_zero = x_f32_bits & 0xFFFF0000
    x_f32_bits = torch.where(random < x_fraction, x_bf16_towards_zero + 0x10000, x_bf16_towards_zero)
    return x_f32_bits.view(torch.float32).bfloat16()


def test_stochastic_round_is_torchaos_with_the_same_bits():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1000) * 10.0 ** rng.integers(-30, 30, 1000),
                        [0.0, -0.0, np.inf, -np.inf, 1.0, -1.0]]).astype(np.float32)
    key = jax.random.key(7)
    ours = stochastic_round(jnp.asarray(x), key)
    random = np.asarray(jax.random.randint(key, x.shape, 0, 1 << 16, dtype=jnp.int32))
    theirs = _torchao_fp32_to_bf16_sr(torch.tensor(x), torch.tensor(random))
    np.testing.assert_array_equal(np.asarray(ours).view(np.uint16), theirs.view(torch.int16).numpy().view(np.uint16))


def test_stochastic_round_expectation_and_reproducibility():
    x = jnp.full((200_000,), 1.0 + 3 * 2.0**-10, jnp.float32)  # 3/8 of the way from 1 to the next bfloat16
    a, b = stochastic_round(x, jax.random.key(1)), stochastic_round(x, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    assert not np.array_equal(np.asarray(a, np.float32), np.asarray(stochastic_round(x, jax.random.key(2)), np.float32))
    assert set(np.unique(np.asarray(a, np.float32)).tolist()) == {1.0, 1.0078125}
    assert abs(float(np.mean(np.asarray(a, np.float64))) - float(x[0])) < 4 * 2.0**-7 * np.sqrt(0.375 * 0.625 / x.size)


def test_small_updates_move_bfloat16_params_in_expectation():
    """An update of 1/8 bfloat16 ulp: round to nearest never moves the params; stochastic
    rounding moves them by the sum of the updates, on average."""
    params = {"w": jnp.ones(4096, jnp.bfloat16)}
    update = {"w": jnp.full(4096, 2.0**-7 / 8, jnp.float32)}
    nearest, stochastic = params, params
    step = jax.jit(apply_updates_stochastic)
    for t in range(64):
        nearest = ol.apply_updates(nearest, update)
        stochastic = step(stochastic, update, jax.random.fold_in(jax.random.key(0), t))
    assert np.all(np.asarray(nearest["w"], np.float32) == 1.0)
    moved = float(np.mean(np.asarray(stochastic["w"], np.float64))) - 1.0
    assert abs(moved - 64 * 2.0**-7 / 8) < 0.05 * 64 * 2.0**-7 / 8
    assert stochastic["w"].dtype == jnp.bfloat16


def test_compact_state_adam_matches_torch_with_bfloat16_rounded_moments():
    """bfloat16 moments: each step computes from the stored (bfloat16) moments in float32 and
    stores them rounded, which is torch's Adam with its state rounded to bfloat16 after each step."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    grads = rng.standard_normal((10, 4, 3)).astype(np.float32)
    tw = torch.nn.Parameter(torch.tensor(w))
    topt = torch.optim.Adam([tw], lr=0.01)
    tx = compact_state(ol.adam(0.01), mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    params, state = jnp.asarray(w), tx.init(jnp.asarray(w))
    update = jax.jit(tx.update)
    for g in grads:
        tw.grad = torch.tensor(g)
        topt.step()
        for entry in topt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                entry[key].copy_(entry[key].bfloat16().float())
        updates, state = update(jnp.asarray(g), state, params)
        params = ol.apply_updates(params, updates)
        np.testing.assert_allclose(np.asarray(params), tw.detach().numpy(), rtol=1e-6, atol=1e-6)
    assert state[0].exp_avg.dtype == state[0].exp_avg_sq.dtype == jnp.bfloat16
    entry = topt.state[tw]
    np.testing.assert_array_equal(np.asarray(state[0].exp_avg, np.float32), entry["exp_avg"].numpy())


def test_compact_state_float32_is_the_inner_optimizer_and_names_are_checked():
    tx, plain = compact_state(ol.sgd(0.1, momentum=0.9), {"momentum_buffer": jnp.float32}), ol.sgd(0.1, momentum=0.9)
    params, g = jnp.ones(3), jnp.asarray([0.1, -0.2, 0.3])
    a, b = tx.update(g, tx.init(params), params), plain.update(g, plain.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(ValueError, match="exp_avg"):
        compact_state(ol.sgd(0.1, momentum=0.9), {"exp_avg": jnp.bfloat16}).init(params)
    with pytest.raises(TypeError, match="float dtype"):
        compact_state(ol.adam(0.1), mu_dtype=jnp.int8)
