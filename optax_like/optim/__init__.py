"""torch.optim's stateful surface: `optax_like.optim.SGD(params, lr=...)`, `.step()`, `.state_dict()`.

Port a torch loop by changing `torch.optim` to `optax_like.optim` and the way gradients are
computed (a closure `loss(params, *batch)` given to `step`, or `backward(grads)`). Each class is
a thin view of a functional optimizer (`optax_like.<name>`), built from its record in
`optax_like.registry` (one export line below). See optax_like/optim/optimizer.py and
docs/adapter.md for the design. `LBFGS` is its own subclass (optax_like/optim/lbfgs.py): its
step needs a closure and its state is global, as torch's.
"""

import inspect as _inspect

from optax_like import registry as _registry
from optax_like.core import validation as _validation
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


def _from_registry(cls_name: str) -> type:
    """The class of `registry.by_class(cls_name)`: its factory's signature and defaults, and the
    record's adapter options (`static`, `structural_zero`, `constants`, `dense_params_only`,
    `snapshots`). How a state maps to torch's state_dict is declared by the state types
    (core.torch_layout)."""
    info = _registry.by_class(cls_name)
    options = dict(info.adapter)
    dense_params_only = options.pop("dense_params_only", False)
    snapshots = options.pop("snapshots", {})
    doc = f"`{info.reference}` over `optax_like.{info.name}` (see its docstring)."
    cls = make_optimizer_class(cls_name, info.factory, doc=doc, **options)
    cls._dense_params_only = dense_params_only  # SparseAdam: torch refuses sparse params
    if snapshots:
        cls.__init__ = _snapshotting(cls.__init__, _inspect.signature(info.factory), snapshots)
    return cls


def _snapshotting(init, signature, snapshots: dict):
    """`snapshots = {entry: argument}`: a None `entry` becomes the constructor's `argument` as a
    float (timm's `max_lr_snapshot`: the constructor's lr, kept while schedulers edit `lr`)."""

    def __init__(self, params, *args, model=None, skip_nonfinite=False, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        for entry, argument in snapshots.items():
            if bound.arguments[entry] is None:
                bound.arguments[entry] = _validation.concrete_value(bound.arguments[argument])
        init(self, params, **bound.arguments, model=model, skip_nonfinite=skip_nonfinite)

    __init__.__signature__ = init.__signature__
    return __init__


SGD = _from_registry("SGD")
Adam = _from_registry("Adam")
AdamW = _from_registry("AdamW")
ASGD = _from_registry("ASGD")
Rprop = _from_registry("Rprop")
Adagrad = _from_registry("Adagrad")
Adadelta = _from_registry("Adadelta")
RMSprop = _from_registry("RMSprop")
Adamax = _from_registry("Adamax")
NAdam = _from_registry("NAdam")
RAdam = _from_registry("RAdam")
SparseAdam = _from_registry("SparseAdam")
Adafactor = _from_registry("Adafactor")
Muon = _from_registry("Muon")
Lion = _from_registry("Lion")
Adopt = _from_registry("Adopt")
LaProp = _from_registry("LaProp")

__all__ += ["SGD", "Adam", "AdamW", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adamax", "NAdam",
            "RAdam", "SparseAdam", "Adafactor", "Muon", "Lion", "Adopt",
            "LaProp"]

from optax_like.optim.lbfgs import LBFGS  # noqa: E402  (own class: closure-only step, global state)

__all__.append("LBFGS")

from optax_like.optim import lr_scheduler, swa_utils  # noqa: E402
from optax_like.optim._names import named_parameters  # noqa: E402
from optax_like.optim.clip_grad import clip_grad_norm_, clip_grad_value_  # noqa: E402

__all__ += ["lr_scheduler", "swa_utils", "named_parameters", "clip_grad_norm_", "clip_grad_value_"]
