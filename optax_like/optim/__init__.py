"""torch.optim's stateful surface: `optax_like.optim.SGD(params, lr=...)`, `.step()`, `.state_dict()`.

Port a torch loop by changing `torch.optim` to `optax_like.optim` and the way gradients are
computed (a closure `loss(params, *batch)` given to `step`, or `backward(grads)`). Each class is
a thin view of a functional optimizer (`optax_like.<name>`): one row of the table below. See
optax_like/optim/optimizer.py and docs/adapter.md for the design. `LBFGS` is its own subclass
(optax_like/optim/lbfgs.py): its step needs a closure and its state is global, as torch's.
"""

from optax_like import optimizers as _optimizers
from optax_like.optim.optimizer import (
    Optimizer,
    RemovableHandle,
    make_optimizer_class,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

# torch class name -> (functional factory name, options for make_optimizer_class).
_TABLE = {
    "SGD": ("sgd", dict(structural_zero=("momentum",))),
    "Adam": ("adam", {}),
    "AdamW": ("adamw", dict(constants={"decoupled_weight_decay": True})),
    "ASGD": ("asgd", {}),
    "Rprop": ("rprop", {}),
    "Adagrad": ("adagrad", dict(quirks=dict(_state_from_construction=True,
                                            _construction_state_args=("initial_accumulator_value",)))),
    "Adadelta": ("adadelta", {}),
    "RMSprop": ("rmsprop", dict(structural_zero=("momentum",))),
    "Adamax": ("adamax", {}),
    "NAdam": ("nadam", {}),
    "RAdam": ("radam", {}),
    "SparseAdam": ("sparse_adam", dict(quirks=dict(_int_step=True))),
    "Adafactor": ("adafactor", {}),
    "Muon": ("muon", dict(static=("ns_steps",))),
}

__all__ = [
    "Optimizer",
    "RemovableHandle",
    "make_optimizer_class",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
]

for _name, (_factory_name, _options) in _TABLE.items():
    globals()[_name] = make_optimizer_class(_name, getattr(_optimizers, _factory_name), **_options)
    __all__.append(_name)

from optax_like.optim.lbfgs import LBFGS  # noqa: E402  (own class: closure-only step, global state)

__all__.append("LBFGS")

from optax_like.optim import lr_scheduler, swa_utils  # noqa: E402
from optax_like.optim._names import named_parameters  # noqa: E402
from optax_like.optim.clip_grad import clip_grad_norm_, clip_grad_value_  # noqa: E402

__all__ += ["lr_scheduler", "swa_utils", "named_parameters", "clip_grad_norm_", "clip_grad_value_"]
