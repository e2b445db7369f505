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

import numpy as np


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("optax_like.interop.torch needs torch (pip install torch).") from e
    return torch


def from_torch_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A torch optimizer state dict with NumPy arrays in place of tensors (hyperparameters as floats)."""
    torch = _torch()

    def convert(x):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(convert(v) for v in x)
        return x

    groups = []
    for group in state_dict["param_groups"]:
        group = {k: (float(v) if isinstance(v, torch.Tensor) else convert(v)) for k, v in group.items()}
        groups.append(group)
    return {"state": convert(state_dict["state"]), "param_groups": groups}


def to_torch_state_dict(optimizer_or_state_dict: Any) -> dict[str, Any]:
    """An optax_like optimizer's state dict as torch expects it: tensors, float32 `step` scalars
    (Python ints stay ints: torch's SparseAdam counts its steps so)."""
    torch = _torch()
    sd = optimizer_or_state_dict
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()
    state = {}
    for pid, entry in sd["state"].items():
        state[pid] = {
            key: value if isinstance(value, int) else  # SparseAdam's step is a Python int in torch
            torch.tensor(np.asarray(value).astype(np.float32) if key == "step" else np.array(value))
            for key, value in entry.items()
        }
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def load_torch_state_dict(optimizer, state_dict: dict[str, Any]) -> None:
    """Loads a torch optimizer state dict into an `optax_like.optim` optimizer (atomic)."""
    optimizer.load_state_dict(from_torch_state_dict(state_dict))
