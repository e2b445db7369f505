"""Smoke test of an installed optax_like wheel (run by .ci/wheel_smoke.sh from outside the source tree).

It checks that the package imported is the installed one (not a checkout), that it carries py.typed and
its version, and that a few real steps of the functional core and of the torch-style adapter run.
"""

import importlib.metadata
import os
import pathlib

import jax
import jax.numpy as jnp

import optax_like as ol
import optax_like.optim

package_dir = pathlib.Path(ol.__file__).resolve().parent
assert "site-packages" in package_dir.parts, f"imported from {package_dir}, not from the installed wheel"
assert (package_dir / "py.typed").is_file(), "py.typed missing from the wheel"
assert ol.__version__ == importlib.metadata.version("optax_like"), (ol.__version__, importlib.metadata.version("optax_like"))


def loss_fn(params):
    return jnp.sum((params["w"] - 1.0) ** 2) + jnp.sum(params["b"] ** 2)


# functional core: jitted Adam steps
params = {"w": jnp.zeros((3, 2)), "b": jnp.ones(2)}
tx = ol.adam(lr=0.1)
state = tx.init(params)


@jax.jit
def step(params, state):
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return ol.apply_updates(params, updates), state


first = float(loss_fn(params))
for _ in range(20):
    params, state = step(params, state)
assert float(loss_fn(params)) < first, "functional Adam did not decrease the loss"

# stateful adapter: torch.optim's surface, a scheduler and a state_dict
opt = ol.optim.SGD({"w": jnp.zeros((3, 2)), "b": jnp.ones(2)}, lr=0.1, momentum=0.9)
sched = ol.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
first = float(loss_fn(opt.params))
for _ in range(10):
    opt.step(loss_fn)
    sched.step()
assert float(loss_fn(opt.params)) < first, "optim.SGD did not decrease the loss"
assert opt.state_dict()["param_groups"][0]["lr"] == 0.025, opt.state_dict()["param_groups"][0]["lr"]

print(f"optax_like {ol.__version__} wheel OK from {package_dir} (cwd {os.getcwd()})")
