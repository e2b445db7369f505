"""The low-bit Adam family's state_dict in torchao's layout (core.torch_layout's `quantized` kind,
optax_like.interop.torchao): ours loads into torchao's class and continues with torchao's
numbers; torchao's loads into ours and continues; a mismatched format, block size or shape is
refused naming the param and the entry, with our state untouched. (Round trips on the record's
shapes and configurations: tests/optim/test_classes_parity.py.)"""

from __future__ import annotations

import io
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like import optim
from optax_like.core.torch_layout import QuantizedTensor
from optax_like.interop import torchao as torchao_interop
from optax_like.interop.torch import load_torch_state_dict, to_torch_state_dict
from optax_like.optim._state_dict import copy_arrays

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torchao_optim = pytest.importorskip("torchao.optim")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (64, 128): quantized at both default block sizes; (100,): plain moments (too small)
SHAPES = [(64, 128), (100,)]
CLASSES = [("AdamW8bit", "8bit"), ("Adam4bit", "4bit"), ("AdamWFp8", "fp8")]


def _problem(steps, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * np.exp(rng.uniform(-6, 0, s))).astype(np.float32) for s in SHAPES]
             for _ in range(steps)]
    return params, grads


def _torch_step(opt, tensors, grads):
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    opt.step()


def _ours_step(opt, grads):
    opt.zero_grad()
    opt.backward([jnp.asarray(g) for g in grads])
    opt.step()


def _codes(value):
    q = torchao_interop.from_torchao(value) if torchao_interop.is_torchao_state(value) else value
    return np.asarray(q.codes).view(np.uint8), np.asarray(q.scale)


def _assert_same_state(ours, theirs):
    """Same entries; quantized ones with the same codes (bit for bit) and scales within 1e-6."""
    assert sorted(ours) == sorted(theirs)
    for pid, entry in theirs.items():
        assert sorted(ours[pid]) == sorted(entry), pid
        for key, value in entry.items():
            mine = ours[pid][key]
            if torchao_interop.is_torchao_state(value):
                assert isinstance(mine, QuantizedTensor), (pid, key)
                (a, s), (b, t) = _codes(mine), _codes(value)
                np.testing.assert_array_equal(a, b, err_msg=f"{pid} {key}")
                np.testing.assert_allclose(s, t, rtol=1e-6, err_msg=f"{pid} {key}")
            else:
                # float32 moments: ulps of the entry's scale (lerp's cancellation near 0)
                b = value.numpy()
                np.testing.assert_allclose(np.asarray(mine), b, rtol=1e-6, atol=1e-6 * float(np.max(np.abs(b))),
                                           err_msg=f"{pid} {key}")


@pytest.mark.parametrize("cls,fmt", CLASSES)
def test_our_state_dict_loads_into_torchao_and_continues(cls, fmt):
    params, grads = _problem(6)
    ours = getattr(optim, cls)([jnp.asarray(p) for p in params], lr=1e-2)
    for g in grads[:3]:
        _ours_step(ours, g)
    sd = ours.state_dict()
    q = sd["state"][0]["exp_avg"]
    assert isinstance(q, QuantizedTensor) and q.format == fmt and q.shape == SHAPES[0]
    assert not isinstance(sd["state"][1]["exp_avg"], QuantizedTensor)  # 100 values: plain in both
    converted = to_torch_state_dict(ours)
    assert type(converted["state"][0]["exp_avg"]).__name__.startswith("OptimState")
    assert isinstance(converted["param_groups"][0]["lr"], torch.Tensor)  # torchao's tensor lr
    assert "block_size" not in converted["param_groups"][0]  # an optimizer attribute there
    tensors = [torch.tensor(np.asarray(p), requires_grad=True) for p in ours.params]
    theirs = getattr(torchao_optim, cls)(tensors, lr=1e-2)
    theirs.load_state_dict(converted)
    _assert_same_state(ours.state_dict()["state"], theirs.state_dict()["state"])
    for g in grads[3:]:
        _ours_step(ours, g)
        _torch_step(theirs, tensors, g)
        for a, b in zip(ours.params, tensors):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=0, atol=1e-6)
    _assert_same_state(ours.state_dict()["state"], theirs.state_dict()["state"])


@pytest.mark.parametrize("cls,fmt", CLASSES)
@pytest.mark.parametrize("route", ["direct", "torch.save"])
def test_torchao_state_dict_loads_into_ours_and_continues(cls, fmt, route):
    params, grads = _problem(6, seed=1)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    theirs = getattr(torchao_optim, cls)(tensors, lr=1e-2)
    for g in grads[:3]:
        _torch_step(theirs, tensors, g)
    ours = getattr(optim, cls)([jnp.asarray(t.detach().numpy()) for t in tensors])  # lr from the state dict
    if route == "direct":
        ours.load_state_dict(theirs.state_dict())
    else:
        buffer = io.BytesIO()
        torch.save(theirs.state_dict(), buffer)
        buffer.seek(0)
        load_torch_state_dict(ours, torch.load(buffer, weights_only=True))
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-2, rel=1e-7)  # torchao's float32 lr
    _assert_same_state(ours.state_dict()["state"], theirs.state_dict()["state"])
    for g in grads[3:]:
        _torch_step(theirs, tensors, g)
        _ours_step(ours, g)
        for a, b in zip(ours.params, tensors):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=0, atol=1e-6)
    _assert_same_state(ours.state_dict()["state"], theirs.state_dict()["state"])


def _stepped_torchao(cls, **kwargs):
    params, grads = _problem(1, seed=2)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = getattr(torchao_optim, cls)(tensors, **kwargs)
    _torch_step(opt, tensors, grads[0])
    return params, opt.state_dict()


def _refused(ours, state_dict, match):
    before = jax.tree.map(np.asarray, ours.state_dict()["state"])
    with pytest.raises(ValueError, match=match):
        ours.load_state_dict(state_dict)
    after = jax.tree.map(np.asarray, ours.state_dict()["state"])
    assert jax.tree.structure(before) == jax.tree.structure(after)
    jax.tree.map(np.testing.assert_array_equal, before, after)  # untouched


def _ours_stepped(cls, params, **kwargs):
    ours = getattr(optim, cls)([jnp.asarray(p) for p in params], **kwargs)
    _ours_step(ours, [np.ones(s, np.float32) for s in SHAPES])
    return ours


def test_a_mismatched_block_size_is_refused_naming_the_param_and_entry():
    params, sd = _stepped_torchao("AdamW8bit", block_size=128)
    ours = _ours_stepped("AdamW8bit", params)  # block_size=256
    _refused(ours, sd, r"param 0: 'exp_avg' has block size 128 \(64 scales\), but this optimizer quantizes it "
                       r"in blocks of 256")


def test_another_format_is_refused_naming_the_param_and_entry():
    params, sd = _stepped_torchao("AdamW4bit")
    _refused(_ours_stepped("AdamW8bit", params), sd,
             r"param 0: 'exp_avg' is quantized as signed 4bit, but this optimizer keeps it as signed 8bit")


def test_quantized_against_plain_is_refused_both_ways():
    params, sd = _stepped_torchao("AdamW8bit", block_size=96)  # 8192 % 96: plain in torchao
    _refused(_ours_stepped("AdamW8bit", params), sd, r"param 0: 'exp_avg' is a plain tensor, but this optimizer "
                                                        r"keeps it quantized \(8bit, block size 256")
    params, sd = _stepped_torchao("AdamW8bit")
    _refused(_ours_stepped("AdamW8bit", params, block_size=96), sd,
             r"param 0: 'exp_avg' is quantized \(8bit, block size 256\), but this optimizer keeps it as a plain array")


def test_wrong_shapes_and_tables_are_refused():
    params, _ = _problem(1)
    ours = _ours_stepped("AdamW8bit", params)
    sd = ours.state_dict()
    q = sd["state"][0]["exp_avg_sq"]
    bad_shape = QuantizedTensor(np.zeros((128, 64), np.uint8), q.scale, q.qmap, format="8bit", signed=False,
                                shape=(128, 64), dtype=np.float32)
    _refused(ours, {**sd, "state": {**sd["state"], 0: {**sd["state"][0], "exp_avg_sq": bad_shape}}},
             r"param 0: 'exp_avg_sq' has shape \(128, 64\), but the param's state has shape \(64, 128\)")
    signed = QuantizedTensor(q.codes, q.scale, sd["state"][0]["exp_avg"].qmap, format="8bit", signed=True,
                             shape=q.shape, dtype=np.float32)
    _refused(ours, {**sd, "state": {**sd["state"], 0: {**sd["state"][0], "exp_avg_sq": signed}}},
             r"param 0: 'exp_avg_sq' is quantized as signed 8bit, but this optimizer keeps it as unsigned 8bit")
    nan = QuantizedTensor(q.codes, np.full(np.shape(q.scale), np.nan, np.float32), q.qmap, format="8bit",
                          signed=False, shape=q.shape, dtype=np.float32)
    _refused(ours, {**sd, "state": {**sd["state"], 0: {**sd["state"][0], "exp_avg_sq": nan}}},
             r"param 0: 'exp_avg_sq' has non-finite scales")


@pytest.mark.parametrize("cls,fmt", CLASSES)
def test_quantized_tensor_is_torchao_s_state_bit_for_bit(cls, fmt):
    _, sd = _stepped_torchao(cls)
    value = sd["state"][0]["exp_avg_sq"]
    q = torchao_interop.from_torchao(value)
    assert q.format == fmt and q.block_size == value.block_size and q.shape == tuple(value.shape)
    np.testing.assert_array_equal(np.asarray(q).view(np.uint32), value.dequantize().numpy().view(np.uint32))
    back = torchao_interop.to_torchao(q)
    assert type(back) is type(value) and back.dtype == value.dtype and tuple(back.shape) == tuple(value.shape)
    for name in ("codes", "scale") + (() if fmt == "fp8" else ("qmap",)):
        a, b = getattr(back, name), getattr(value, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b)
    copied = copy_arrays({"x": QuantizedTensor(jnp.asarray(q.codes), jnp.asarray(q.scale), q.qmap, format=q.format,
                                               signed=q.signed, shape=q.shape, dtype=q.dtype)})["x"]
    assert isinstance(copied, QuantizedTensor) and copied.block_size == q.block_size  # a pytree node


def test_bfloat16_params_keep_their_appearance_dtype():
    ours = optim.AdamW8bit([jnp.zeros((64, 64), jnp.bfloat16)])
    ours.backward([jnp.ones((64, 64), jnp.bfloat16)])
    ours.step()
    converted = to_torch_state_dict(ours)["state"][0]["exp_avg"]
    assert converted.dtype == torch.bfloat16 and converted.codes.dtype == torch.uint8
    assert torchao_interop.from_torchao(converted).dtype == jnp.bfloat16


def test_a_bare_state_dict_converts_against_a_torchao_target():
    """`to_torch_state_dict(state_dict, target=torchao_optimizer)`: the target's tensor entries
    (torchao's lr) are written as its tensors, so the bare dict (no optimizer to read the
    declarations from) loads and steps in torchao too."""
    params, grads = _problem(2)
    ours = optim.AdamW8bit([(f"p{i}", jnp.asarray(p)) for i, p in enumerate(params)], lr=1e-2)
    _ours_step(ours, grads[0])
    tensors = [torch.tensor(np.asarray(p), requires_grad=True) for p in ours.params]
    theirs = torchao_optim.AdamW8bit([(f"p{i}", t) for i, t in enumerate(tensors)], lr=1e-2)
    converted = to_torch_state_dict(ours.state_dict(), target=theirs)
    assert isinstance(converted["param_groups"][0]["lr"], torch.Tensor)
    theirs.load_state_dict(converted)
    _ours_step(ours, grads[1])
    _torch_step(theirs, tensors, grads[1])
    for a, b in zip(ours.params, tensors):
        np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=0, atol=1e-6)
