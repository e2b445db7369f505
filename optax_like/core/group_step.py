"""A step counter the reference keeps in its param group, not per param: `param_groups[i]['step']`
of timm's Lamb (a 0-d float32 tensor) and Adan (a Python int).

Such a counter advances at every step of its group, also a step in which no param of the group
has a gradient, and the reference creates the entry at the group's first step (a group that has
not stepped has no 'step'). A state type with one int32 field `step` declares it with
`declare_group_step(StateType, python_type)`: the group form of `core.torch_layout` (the
adapter keeps the entry in `param_groups`, `state_dict()` exports it there and loads it from
there, `optax_like.interop.torch` writes a float counter as the reference's 0-d float32 tensor).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_like.core.torch_layout import GroupEntries, TorchLayout, declare_torch_state, host_array

__all__ = ["declare_group_step"]


def _loaded_step(value: Any) -> int:
    """A loaded 'step' entry (a number or a one-element tensor/array holding a whole number) as
    an int in [0, 2**31)."""
    try:
        arr = host_array(value, "loaded param group entry 'step'")
    except TypeError:
        arr = None
    if (arr is None or arr.size != 1 or isinstance(value, bool) or arr.dtype == np.bool_
            or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating))):
        raise ValueError(f"loaded param group entry 'step' must be a whole number in [0, 2**31), got {value!r}")
    x = float(arr.reshape(()))
    if not (np.isfinite(x) and x == int(x) and 0 <= x < 2**31):
        raise ValueError(f"loaded param group entry 'step' must be a whole number in [0, 2**31), got {value!r}")
    return int(x)


def declare_group_step(state_type: type, python_type: type) -> TorchLayout:
    """Declares `state_type` (a NamedTuple whose one field `step` is an int32 0-d array) as the
    group entry 'step': exported as a `python_type` (`float`: the reference's 0-d float32 tensor,
    written so by `optax_like.interop.torch`; `int`: a Python int) once the group has stepped (no
    entry before, as the reference), the live entry after a step is the int32 device scalar (no
    host sync), and a loaded entry must hold a whole number in [0, 2**31) (a missing one keeps
    the count)."""
    if python_type not in (int, float):
        raise TypeError(f"declare_group_step: python_type must be int or float, got {python_type!r}")

    def export(node) -> dict:
        step = int(np.asarray(node.step))
        return {"step": python_type(step)} if step else {}

    def load(fresh, entries: dict):
        if "step" not in entries:
            return fresh
        return fresh._replace(step=jnp.asarray(_loaded_step(entries["step"]), jnp.int32))

    return declare_torch_state(
        state_type, group=GroupEntries(("step",), export=export, load=load, view=lambda node: {"step": node.step}),
        tensor_group_entries=("step",) if python_type is float else ())
