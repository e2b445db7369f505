"""optax 0.2.8's optax/_src/combine_test.py, run against optax_like (shim.py)."""

from tests.optax_compat import shim

shim.load("_src/combine_test.py", globals())
