"""torch.optim state dicts <-> optax_like.optim optimizers (torch imported lazily).

A torch checkpoint (`torch.save(optimizer.state_dict(), path)`, read back with
`torch.load(path, weights_only=True)`) has the layout `optax_like.optim` uses, with the same keys,
so conversion is a change of array type:

    opt = optax_like.optim.Adam(params, lr=...)          # same param order as the torch model
    load_torch_state_dict(opt, torch.load("opt.pt", weights_only=True))
    torch_opt.load_state_dict(to_torch_state_dict(opt))  # and back

Param ids follow the leaves of each group's tree in `jax.tree.leaves` order (dicts sorted by
key): give the params as a list in the torch model's `parameters()` order to line them up.
"""

from __future__ import annotations

import copy
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_like.optim._state_dict import host_array, plain

_BFLOAT16 = np.dtype(jnp.bfloat16)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("optax_like.interop.torch needs torch (pip install torch).") from e
    return torch


def _tensor(value: Any):
    """A NumPy/JAX array as a torch tensor of the same dtype (bfloat16 included), a copy."""
    torch = _torch()
    arr = np.asarray(value)
    if arr.dtype == _BFLOAT16:
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.tensor(np.array(arr))


def from_torch_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A torch optimizer state dict with NumPy arrays in place of tensors (copies; bfloat16 tensors
    become `jnp.bfloat16` arrays bit for bit) and 0-d hyperparameter tensors as Python numbers."""
    torch = _torch()

    def convert(x):
        if isinstance(x, torch.Tensor):
            return host_array(x, "torch state entry")
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(convert(v) for v in x)
        return x

    groups = [{k: plain(v) if isinstance(v, torch.Tensor) else convert(v) for k, v in group.items()}
              for group in state_dict["param_groups"]]
    return {"state": convert(state_dict["state"]), "param_groups": groups}


def to_torch_state_dict(optimizer_or_state_dict: Any) -> dict[str, Any]:
    """An optax_like optimizer's state dict as torch expects it: tensors of the arrays' dtypes
    (bfloat16 included), float32 `step` scalars (Python ints stay ints: torch's SparseAdam
    counts its steps so), lists (LBFGS's history) converted element by element."""
    sd = optimizer_or_state_dict
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()

    def convert(key, value):
        if isinstance(value, (list, tuple)):
            return type(value)(convert(key, v) for v in value)
        if value is None or isinstance(value, (bool, int, float)):
            return value  # torch's Python numbers (SparseAdam's step, LBFGS's n_iter, t, ...)
        if key == "step":
            return _tensor(np.asarray(value, np.float32))
        return _tensor(value)

    state = {pid: {key: convert(key, value) for key, value in entry.items()} for pid, entry in sd["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def load_torch_state_dict(optimizer, state_dict: dict[str, Any]) -> None:
    """Loads a torch optimizer state dict into an `optax_like.optim` optimizer (atomic; the same
    checks as `optimizer.load_state_dict`, whose messages name the param id and the key)."""
    optimizer.load_state_dict(from_torch_state_dict(state_dict))
