"""torchao's block-wise quantization, reproduced bit for bit (`transforms.quantized_adam`), and
the state's torchao layout (codes, scale, qmap) loading into torchao's class and back."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
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


def test_none_gradient_leaf_keeps_its_state():
    tx = qo.adam8bit()
    p = {"w": jnp.ones((64, 128)), "b": jnp.ones((10,))}
    state = ol.per_leaf_scalars(tx.init(p))  # a leaf may miss its gradient
    u, new = tx.update({"w": None, "b": jnp.ones((10,))}, state, p)
    assert u["w"] is None
    old_inner = next(s for s in state if isinstance(s, qa.ScaleByQuantizedAdamState))
    new_inner = next(s for s in new if isinstance(s, qa.ScaleByQuantizedAdamState))
    assert new_inner.exp_avg["w"] is old_inner.exp_avg["w"]
    assert new_inner.step.tolist() == [1.0, 0.0]  # leaves in key order: b, w
    assert jax.tree.structure(new) == jax.tree.structure(state)


def test_direction_form_without_learning_rate():
    """Without `learning_rate` the transform emits Adam's direction (m / bc1) / denom, which a
    chain with the learning rate turns into a step within an ulp of the full form's."""
    rng = np.random.default_rng(3)
    p = {"w": jnp.asarray(rng.standard_normal((64, 64)).astype(np.float32))}
    g = {"w": jnp.asarray(rng.standard_normal((64, 64)).astype(np.float32))}
    direction = ol.chain(qa.scale_by_quantized_adam(), ol.scale_by_learning_rate(1e-2))
    full = qa.scale_by_quantized_adam(learning_rate=1e-2)
    u1, _ = direction.update(g, direction.init(p), p)
    u2, _ = full.update(g, full.init(p), p)
    # the full form's update is p_new - p: exact to an ulp of |p| (< 4 here), not of the step
    np.testing.assert_allclose(np.asarray(u1["w"]), np.asarray(u2["w"]), rtol=0, atol=2.4e-7)
    with pytest.raises(ValueError, match="needs them"):
        full.update(g, full.init(p))
    with pytest.raises(ValueError, match="needs learning_rate"):
        qa.scale_by_quantized_adam(weight_decay=0.1)


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


def test_the_quantized_layout_kind_is_declared_checked():
    """`quantized` fields must be buffers with a codec; the state type declares its kind (the
    converter guesses nothing from names)."""
    from typing import NamedTuple

    from optax_like.core import torch_layout as tl

    layout = tl.torch_layout_of(qa.scale_by_quantized_adam().init({"w": jnp.zeros((64, 64))}))
    assert layout is not None and set(layout.quantized) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert layout.tensor_group_entries == ("lr",)

    class S(NamedTuple):
        m: object
        step: object

    codec = tl.QuantizedCodec(qa.QuantizedMoment, lambda node, p: None, lambda value, fresh: fresh)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"quantized fields \['step'\] must be buffers"):
        tl.declare_torch_state(S, buffers=("m",), scalars={"step": tl.STEP}, started="step", quantized={"step": codec})
    with pytest.raises(TypeError, match=r"quantized fields \['m'\] must be buffers, each with a QuantizedCodec"):
        tl.declare_torch_state(S, buffers=("m",), scalars={"step": tl.STEP}, started="step", quantized={"m": "codec"})
