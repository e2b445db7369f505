"""torchao's low-bit optimizer states <-> `core.torch_layout.QuantizedTensor` (torch and torchao
imported lazily, only when a conversion needs them).

torchao 0.18's Adam8bit / Adam4bit / AdamFp8 (and the AdamW variants) keep the moments of a
param with at least 4096 values, whose size the block size divides, as tensor subclasses:
`OptimState8bit(codes, scale, qmap, signed)`, `OptimState4bit(codes, scale, qmap, signed,
shape)`, `OptimStateFp8(codes, scale)`, each with the param's dtype as its "appearance" dtype.
`optax_like.optim.Adam8bit(...).state_dict()` holds a `QuantizedTensor` with the same
attributes for each of them; `optax_like.interop.torch.to_torch_state_dict` turns it into
torchao's subclass (`to_torchao`), and loading a torchao state dict reads the subclass back
(`from_torchao`), bit for bit (codes, scales and tables are copied, never aliased: torchao
updates its tensors in place).
"""

from __future__ import annotations

import sys
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_like.core.torch_layout import QuantizedTensor

__all__ = ["from_torchao", "is_torchao_state", "to_torchao"]

_FP8 = np.dtype(jnp.float8_e4m3fn)
_BFLOAT16 = np.dtype(jnp.bfloat16)


def _subclasses() -> dict:
    """torchao's state classes by format (imports torchao.optim)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao's import warns about optional CUDA kernels
        try:
            from torchao.optim.subclass_4bit import OptimState4bit
            from torchao.optim.subclass_8bit import OptimState8bit
            from torchao.optim.subclass_fp8 import OptimStateFp8
        except ImportError as e:  # pragma: no cover - exercised only without torchao
            raise ImportError("converting quantized optimizer states needs torchao (pip install torchao).") from e
    return {"8bit": OptimState8bit, "4bit": OptimState4bit, "fp8": OptimStateFp8}


def is_torchao_state(value: Any) -> bool:
    """Whether `value` is one of torchao's optimizer state subclasses (False without torchao
    loaded: such a value cannot exist then)."""
    if "torchao.optim" not in sys.modules or "torch" not in sys.modules:
        return False
    return isinstance(value, tuple(_subclasses().values()))


def _numpy(t: Any) -> np.ndarray:
    """A plain torch tensor as a NumPy array that owns its memory (float8 and bfloat16 bit for bit)."""
    import torch

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().copy().view(_FP8)
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().copy().view(_BFLOAT16)
    return t.numpy().copy()


def _numpy_dtype(dtype: Any) -> np.dtype:
    import torch

    if dtype == torch.bfloat16:
        return _BFLOAT16
    return torch.empty((), dtype=dtype).numpy().dtype


def _torch_dtype(dtype: np.dtype):
    import torch

    if dtype == _BFLOAT16:
        return torch.bfloat16
    return torch.from_numpy(np.zeros((), dtype)).dtype


def from_torchao(value: Any) -> QuantizedTensor:
    """A torchao `OptimState8bit` / `OptimState4bit` / `OptimStateFp8` as a `QuantizedTensor`
    (host copies of its codes, scale and table)."""
    classes = _subclasses()
    fmt = next((name for name, cls in classes.items() if isinstance(value, cls)), None)
    if fmt is None:
        raise TypeError(f"not a torchao optimizer state: {type(value).__name__}")
    qmap = None if fmt == "fp8" else _numpy(value.qmap).astype(np.float32)
    shape = tuple(value._shape) if fmt == "4bit" else tuple(value.codes.shape)
    return QuantizedTensor(_numpy(value.codes), _numpy(value.scale), qmap, format=fmt,
                           signed=None if fmt == "fp8" else bool(value.signed), shape=shape,
                           dtype=_numpy_dtype(value.dtype))


def to_torchao(value: QuantizedTensor):
    """A `QuantizedTensor` as torchao's state subclass (copies), the param's dtype as its
    appearance dtype: what torchao's optimizer holds for the param."""
    import torch

    classes = _subclasses()
    codes = np.asarray(value.codes)
    if value.format == "fp8":
        codes_t = torch.from_numpy(np.array(codes.astype(_FP8).view(np.uint8))).view(torch.float8_e4m3fn)
    else:
        codes_t = torch.from_numpy(np.array(codes, np.uint8))
    scale_t = torch.from_numpy(np.array(value.scale, np.float32).reshape(-1))
    dtype = _torch_dtype(value.dtype)
    if value.format == "fp8":
        return classes["fp8"](codes_t.reshape(value.shape), scale_t, dtype=dtype)
    qmap = value.qmap
    assert qmap is not None
    qmap_t = torch.from_numpy(np.array(qmap, np.float32))
    if value.format == "8bit":
        return classes["8bit"](codes_t.reshape(value.shape), scale_t, qmap_t, bool(value.signed), dtype=dtype)
    return classes["4bit"](codes_t.reshape(-1), scale_t, qmap_t, bool(value.signed), value.shape, dtype=dtype)
