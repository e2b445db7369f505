"""Counting the adapter's step compilations from the outside (no hook in library code).

JAX reports every trace of a jitted function to `jax.monitoring` (the event
'/jax/core/compile/jaxpr_trace_duration', with the function's name); jit's caches answer a
repeated call without tracing, so each trace of the adapter's step (every class's, LBFGS's
too: optim/_step.py) is one compilation of it.

    traces = step_traces()
    ...                               # steps
    assert step_traces() == traces    # no recompile
"""

from __future__ import annotations

import jax

from optax_like.optim import _step

_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_STEP_NAME = _step.adapter_step.__name__
_count = [0]


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == _TRACE_EVENT and kwargs.get("fun_name") == _STEP_NAME:
        _count[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


def step_traces() -> int:
    """How many times the adapter's jitted step has been traced (compiled) in this process."""
    return _count[0]


def clear_step_cache() -> None:
    """Forgets the compiled steps, so that a test counts its own compilations (jit's cache is
    global: another test's identical step would otherwise be reused)."""
    _step.jitted_step.clear_cache()
