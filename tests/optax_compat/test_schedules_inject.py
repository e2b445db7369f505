"""optax 0.2.8's optax/schedules/_inject_test.py, run against optax_like (shim.py)."""

from tests.optax_compat import shim

shim.load("schedules/_inject_test.py", globals())
