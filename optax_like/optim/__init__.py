"""torch.optim's stateful surface: `optax_like.optim.SGD(params, lr=...)`, `.step()`, `.state_dict()`.

Port a torch loop by changing `torch.optim` to `optax_like.optim` and the way gradients are
computed (a closure `loss(params, *batch)` given to `step`, or `backward(grads)`). Each class is
a thin view of a functional optimizer (`optax_like.<name>`): one line below. See
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

__all__ = [
    "Optimizer",
    "RemovableHandle",
    "make_optimizer_class",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
]

# One class per torch optimizer, each a view of its functional factory (signature and defaults
# are the factory's). How a state maps to torch's state_dict is declared by the state types
# (core.torch_layout), so no class needs per-class state options.
SGD = make_optimizer_class("SGD", _optimizers.sgd, structural_zero=("momentum",))
Adam = make_optimizer_class("Adam", _optimizers.adam)
AdamW = make_optimizer_class("AdamW", _optimizers.adamw, constants={"decoupled_weight_decay": True})
ASGD = make_optimizer_class("ASGD", _optimizers.asgd)
Rprop = make_optimizer_class("Rprop", _optimizers.rprop)
Adagrad = make_optimizer_class("Adagrad", _optimizers.adagrad)
Adadelta = make_optimizer_class("Adadelta", _optimizers.adadelta)
RMSprop = make_optimizer_class("RMSprop", _optimizers.rmsprop, structural_zero=("momentum",))
Adamax = make_optimizer_class("Adamax", _optimizers.adamax)
NAdam = make_optimizer_class("NAdam", _optimizers.nadam)
RAdam = make_optimizer_class("RAdam", _optimizers.radam)
Adafactor = make_optimizer_class("Adafactor", _optimizers.adafactor)
Muon = make_optimizer_class("Muon", _optimizers.muon, static=("ns_steps",))


class SparseAdam(make_optimizer_class("SparseAdam", _optimizers.sparse_adam)):
    """torch.optim.SparseAdam over `optax_like.sparse_adam` (see its docstring)."""

    _dense_params_only = True  # torch refuses sparse params at construction


__all__ += ["SGD", "Adam", "AdamW", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adamax", "NAdam",
            "RAdam", "SparseAdam", "Adafactor", "Muon"]

from optax_like.optim.lbfgs import LBFGS  # noqa: E402  (own class: closure-only step, global state)

__all__.append("LBFGS")

from optax_like.optim import lr_scheduler, swa_utils  # noqa: E402
from optax_like.optim._names import named_parameters  # noqa: E402
from optax_like.optim.clip_grad import clip_grad_norm_, clip_grad_value_  # noqa: E402

__all__ += ["lr_scheduler", "swa_utils", "named_parameters", "clip_grad_norm_", "clip_grad_value_"]
