"""optax 0.2.8's optax/_src/update_test.py, run against optax_like (shim.py)."""

from tests.optax_compat import shim

shim.load("_src/update_test.py", globals())
