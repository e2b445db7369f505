"""torchao's block-wise quantization, reproduced bit for bit (`transforms.quantized_adam`), and
the state's torchao layout (codes, scale, qmap) loading into torchao's class and back."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like.core.base import apply_updates
from optax_like.optimizers import quantized_adam as qo
from optax_like.transforms import quantized_adam as qa

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torchao_optim = pytest.importorskip("torchao.optim")
    from torchao.optim import subclass_4bit, subclass_8bit, subclass_fp8  # noqa: E402

FORMATS = [(8, 256), (4, 128), ("fp8", 256)]


def _torchao_state(fmt, signed, shape, block_size):
    if fmt == 8:
        return subclass_8bit.OptimState8bit.zeros(shape, signed, block_size)
    if fmt == 4:
        return subclass_4bit.OptimState4bit.zeros(shape, signed, block_size)
    return subclass_fp8.OptimStateFp8.zeros(shape, block_size)


@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (4, True), (4, False)])
def test_qmaps_are_torchao_s(bits, signed):
    module = subclass_8bit if bits == 8 else subclass_4bit
    ref = torch.tensor(module.get_qmap_signed() if signed else module.get_qmap_unsigned(), dtype=torch.float32)
    np.testing.assert_array_equal(qa.qmap(bits, signed).view(np.uint32), ref.numpy().view(np.uint32))


def _inputs(rng, n, signed):
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-25, 3, n))).astype(np.float32)
    x[:256] = 0.0  # an all-zero block: scale clipped to 1e-12
    x[256:512] = x[256]  # a constant block: every value is its absmax
    if not signed:
        x = np.abs(x)
    return x


@pytest.mark.parametrize("fmt,block_size", FORMATS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(16384,), (64, 96, 4)])
def test_quantize_and_dequantize_bit_for_bit(fmt, block_size, signed, shape):
    n = int(np.prod(shape))
    x = _inputs(np.random.default_rng(hash((str(fmt), signed)) % 2**32), n, signed).reshape(shape)
    ref = _torchao_state(fmt, signed, shape, block_size)
    ref.copy_(torch.from_numpy(x))
    q = jax.jit(lambda v: qa.quantize(v, fmt, signed, block_size))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(q.codes).view(np.uint8), ref.codes.view(torch.uint8).numpy())
    np.testing.assert_array_equal(np.asarray(q.scale), ref.scale.numpy())
    deq = jax.jit(lambda c: qa.dequantize(c, fmt, signed, shape))(q)
    np.testing.assert_array_equal(np.asarray(deq).view(np.uint32), ref.dequantize().numpy().view(np.uint32))


@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (4, True), (4, False)])
def test_table_entries_and_midpoints_round_as_torchao(bits, signed):
    """Exact code values and the midpoints between neighbours (ties go up, torchao's `>=`)."""
    table = qa.qmap(bits, signed)
    mids = ((table[:-1] + table[1:]) * np.float32(0.5)).astype(np.float32)
    values = np.concatenate([table, mids, np.nextafter(mids, -np.inf), np.nextafter(mids, np.inf)])
    block = 256 if bits == 8 else 128
    values = np.resize(values, -(-values.size // block) * block).astype(np.float32)
    values[::block] = 1.0  # absmax 1 per block: the values are their own scaled values
    ref = _torchao_state(bits, signed, (values.size,), block)
    ref.copy_(torch.from_numpy(values))
    q = qa.quantize(jnp.asarray(values), bits, signed, block)
    np.testing.assert_array_equal(np.asarray(q.codes), ref.codes.numpy())


@pytest.mark.parametrize("name,factory,fmt", [("AdamW8bit", qo.adamw8bit, 8), ("AdamW4bit", qo.adamw4bit, 4),
                                               ("AdamWFp8", qo.adamw_fp8, "fp8")])
def test_state_loads_into_torchao_and_back(name, factory, fmt):
    """Our state after 3 steps, written as torchao's state_dict (the tensor subclass built from
    codes, scale and the format's qmap), loads into a fresh torchao optimizer; one more step on
    both gives the same params and codes; and torchao's state reads back into ours."""
    rng = np.random.default_rng(1)
    shapes = {"w": (64, 128), "b": (100,)}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) * 1e-2 for k, s in shapes.items()} for _ in range(4)]
    tx = factory()
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    step = jax.jit(tx.update)
    for g in grads[:3]:
        u, state = step({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = apply_updates(p, u)
    inner = next(s for s in state if isinstance(s, qa.ScaleByQuantizedAdamState))

    def export(x, signed):
        if not qa.is_quantized(x):
            return torch.tensor(np.asarray(x))
        codes = torch.tensor(np.asarray(x.codes).view(np.uint8))
        scale = torch.tensor(np.asarray(x.scale))
        if fmt == "fp8":
            return subclass_fp8.OptimStateFp8(codes.view(torch.float8_e4m3fn), scale, dtype=torch.float32)
        table = torch.tensor(qa.qmap(fmt, signed))
        if fmt == 8:
            return subclass_8bit.OptimState8bit(codes, scale, table, signed, dtype=torch.float32)
        return subclass_4bit.OptimState4bit(codes, scale, table, signed, shapes["w"], dtype=torch.float32)

    tensors = {k: torch.tensor(np.asarray(p[k]), requires_grad=True) for k in shapes}
    opt = getattr(torchao_optim, name)(list(tensors.values()))
    sd = opt.state_dict()
    sd["state"] = {i: {"step": torch.tensor(float(inner.step[k])),
                       "exp_avg": export(inner.exp_avg[k], True),
                       "exp_avg_sq": export(inner.exp_avg_sq[k], False)}
                   for i, k in enumerate(shapes)}
    opt.load_state_dict(sd)
    assert type(opt.state[tensors["w"]]["exp_avg"]).__name__.startswith("OptimState")
    for k, t in tensors.items():
        t.grad = torch.tensor(grads[3][k])
    opt.step()
    u, state = step({k: jnp.asarray(v) for k, v in grads[3].items()}, state, p)
    p = apply_updates(p, u)
    inner = next(s for s in state if isinstance(s, qa.ScaleByQuantizedAdamState))
    for k in shapes:
        np.testing.assert_allclose(np.asarray(p[k]), tensors[k].detach().numpy(), rtol=0, atol=1e-6)
    back = opt.state_dict()["state"][0]
    np.testing.assert_array_equal(np.asarray(inner.exp_avg["w"].codes).view(np.uint8),
                                  back["exp_avg"].codes.view(torch.uint8).numpy())
    np.testing.assert_array_equal(np.asarray(inner.exp_avg_sq["w"].codes).view(np.uint8),
                                  back["exp_avg_sq"].codes.view(torch.uint8).numpy())
    assert float(back["step"]) == float(inner.step["w"]) == 4.0


def test_none_gradient_leaf_keeps_its_state():
    tx = qo.adam8bit()
    p = {"w": jnp.ones((64, 128)), "b": jnp.ones((10,))}
    state = tx.init(p)
    u, new = tx.update({"w": None, "b": jnp.ones((10,))}, state, p)
    assert u["w"] is None
    old_inner = next(s for s in state if isinstance(s, qa.ScaleByQuantizedAdamState))
    new_inner = next(s for s in new if isinstance(s, qa.ScaleByQuantizedAdamState))
    assert new_inner.exp_avg["w"] is old_inner.exp_avg["w"]
    assert float(new_inner.step["w"]) == 0.0 and float(new_inner.step["b"]) == 1.0
    assert jax.tree.structure(new) == jax.tree.structure(state)


def test_min_quant_size_rule():
    p = {"small": jnp.zeros((4095,)), "big": jnp.zeros((4096,)), "odd": jnp.zeros((4352 + 2,)),
         "half": jnp.zeros((64, 64), jnp.bfloat16)}
    st = qa.scale_by_quantized_adam(block_size=256).init(p)
    assert not qa.is_quantized(st.exp_avg["small"]) and not qa.is_quantized(st.exp_avg["odd"])
    assert qa.is_quantized(st.exp_avg["big"]) and st.exp_avg["big"].scale.shape == (16,)
    assert st.exp_avg["half"].codes.dtype == jnp.uint8  # bf16 params: codes too (torchao)
    assert st.exp_avg["small"].dtype == jnp.float32


def test_bf16_stochastic_round_refused_for_bf16_params_only():
    tx = qo.adamw8bit(bf16_stochastic_round=True)
    tx.init({"w": jnp.zeros((3,), jnp.float32)})
    with pytest.raises(NotImplementedError, match="bf16_stochastic_round"):
        tx.init({"w": jnp.zeros((3,), jnp.bfloat16)})


def test_signatures_are_torchao_s():
    import inspect

    for fn, cls in [(qo.adam8bit, "Adam8bit"), (qo.adamw8bit, "AdamW8bit"), (qo.adam4bit, "Adam4bit"),
                    (qo.adamw4bit, "AdamW4bit"), (qo.adam_fp8, "AdamFp8"), (qo.adamw_fp8, "AdamWFp8")]:
        ours = inspect.signature(fn).parameters
        theirs = dict(inspect.signature(getattr(torchao_optim, cls)).parameters)
        theirs.pop("params")
        assert list(ours) == list(theirs), cls
        for name, parameter in theirs.items():
            assert ours[name].default == parameter.default, (cls, name)
            assert ours[name].kind == parameter.kind, (cls, name)
