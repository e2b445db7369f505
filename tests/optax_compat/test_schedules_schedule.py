"""optax 0.2.8's optax/schedules/_schedule_test.py, run against optax_like (shim.py)."""

from tests.optax_compat import shim

shim.load("schedules/_schedule_test.py", globals())
