"""optax 0.2.8's optax/transforms/_masking_test.py, run against optax_like (shim.py)."""

from tests.optax_compat import shim

shim.load("transforms/_masking_test.py", globals())
