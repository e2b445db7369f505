"""torch.optim's stateful surface: `optax_like.optim.SGD(params, lr=...)`, `.step()`, `.state_dict()`.

Port a torch loop by changing `torch.optim` to `optax_like.optim` and the way gradients are
computed (a closure `loss(params, *batch)` given to `step`, or `backward(grads)`). Each class is
a thin view of a functional optimizer (`optax_like.<name>`), built from its record in
`optax_like.registry` (one export line below). See optax_like/optim/optimizer.py and
docs/adapter.md for the design. `LBFGS` is its own subclass (optax_like/optim/lbfgs.py): its
step needs a closure and its state is global, as torch's.
"""

from optax_like import registry as _registry
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
    record's adapter options (`make_optimizer_class`'s `static`, `structural_zero`, `constants`,
    `snapshots`, `dense_params_only`, `cross_group`). How a state maps to torch's state_dict is declared by the
    state types (core.torch_layout)."""
    info = _registry.by_class(cls_name)
    doc = f"`{info.reference}` over `optax_like.{info.name}` (see its docstring)."
    return make_optimizer_class(cls_name, info.factory, doc=doc, **info.adapter)


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
SGDW = _from_registry("SGDW")
Lars = _from_registry("Lars")
AdaBelief = _from_registry("AdaBelief")
NAdamW = _from_registry("NAdamW")
MADGRAD = _from_registry("MADGRAD")
RMSpropTF = _from_registry("RMSpropTF")
AdamWLegacy = _from_registry("AdamWLegacy")
NAdamLegacy = _from_registry("NAdamLegacy")
Mars = _from_registry("Mars")
AdamP = _from_registry("AdamP")
SGDP = _from_registry("SGDP")
RAdamLegacy = _from_registry("RAdamLegacy")
NvNovoGrad = _from_registry("NvNovoGrad")
Lamb = _from_registry("Lamb")
Adan = _from_registry("Adan")
# timm's Adafactor: the name Adafactor is torch.optim.Adafactor's (above)
TimmAdafactor = _from_registry("TimmAdafactor")
TimmAdafactor.__doc__ = f"{TimmAdafactor.__doc__} (timm's class name, Adafactor, is torch.optim.Adafactor's here: `optim.Adafactor`.)"
AdafactorBigVision = _from_registry("AdafactorBigVision")
# timm's Muon: the name Muon is torch.optim.Muon's (above)
TimmMuon = _from_registry("TimmMuon")
Kron = _from_registry("Kron")
Adam8bit = _from_registry("Adam8bit")
AdamW8bit = _from_registry("AdamW8bit")
Adam4bit = _from_registry("Adam4bit")
AdamW4bit = _from_registry("AdamW4bit")
AdamFp8 = _from_registry("AdamFp8")
AdamWFp8 = _from_registry("AdamWFp8")

__all__ += ["SGD", "Adam", "AdamW", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adamax", "NAdam",
            "RAdam", "SparseAdam", "Adafactor", "Muon", "Lion", "Adopt",
            "LaProp", "SGDW", "Lars", "AdaBelief", "NAdamW", "MADGRAD",
            "RMSpropTF", "AdamWLegacy", "NAdamLegacy", "Mars", "AdamP"]
__all__ += ["Adam8bit", "AdamW8bit", "Adam4bit", "AdamW4bit", "AdamFp8", "AdamWFp8"]
__all__ += ["SGDP", "RAdamLegacy", "NvNovoGrad"]
__all__ += ["Lamb", "Adan"]
__all__ += ["TimmAdafactor", "AdafactorBigVision"]
__all__ += ["TimmMuon"]
__all__ += ["Kron"]

from optax_like.optim.lbfgs import LBFGS  # noqa: E402  (own class: closure-only step, global state)
from optax_like.optim.adahessian import Adahessian  # noqa: E402  (own step: a loss function, Hessian-vector products)

__all__.append("LBFGS")
__all__.append("Adahessian")

from optax_like.optim.schedule_free import (  # noqa: E402
    AdamWScheduleFree,
    RAdamScheduleFree,
    ScheduleFreeWrapper,
    SGDScheduleFree,
)

# own module: train()/eval()
__all__ += ["AdamWScheduleFree", "SGDScheduleFree", "RAdamScheduleFree", "ScheduleFreeWrapper"]

from optax_like.optim.wrappers import Lookahead  # noqa: E402  (wraps an optimizer instance)

__all__.append("Lookahead")

from optax_like.optim import lr_scheduler, swa_utils  # noqa: E402
from optax_like.optim._names import named_parameters  # noqa: E402
from optax_like.optim.clip_grad import clip_grad_norm_, clip_grad_value_  # noqa: E402

__all__ += ["lr_scheduler", "swa_utils", "named_parameters", "clip_grad_norm_", "clip_grad_value_"]

from optax_like.optim.grouping import (  # noqa: E402
    create_optimizer_v2,
    in_groups,
    param_groups_layer_decay,
    param_groups_weight_decay,
    with_rules,
)

__all__ += ["create_optimizer_v2", "in_groups", "param_groups_layer_decay", "param_groups_weight_decay", "with_rules"]
