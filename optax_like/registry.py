"""The registry of optimizers: one record per optimizer (the project's `OptimizerInfo`).

Every generic test suite (parity against the reference, properties, state contract, validation,
state_dict round trips, tree independence), the README's optimizer table and the benchmarks
read this table; an optimizer is added by writing its transform, its alias, one record here and
its export lines (CONTRIBUTING.md).

    from optax_like import registry
    info = registry.OPTIMIZERS["adamax"]
    tx = info.factory(**info.example)                # optax_like.adamax(lr=0.01, ...)
    cls = info.adapter_class()                       # optax_like.optim.Adamax
    ref = info.reference_class()                     # torch.optim.Adamax

A record says what the reference does not: the configurations we test by default and the ones
that give every state entry, the ranges of valid values the property tests draw from, argument
sets the reference rejects, the layouts and dtypes we support, and our known deviations with
their reasons. torch's own configurations and error inputs stay in torch's `optim_db`
(torch/testing/_internal/common_optimizers.py), which tests/parity/test_optim_db.py reads for
every record whose reference is a torch.optim class.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import types
from typing import Any, Callable, Mapping

from optax_like import optimizers as _opt
from optax_like.transforms.lamb import lamb_global_clip as _lamb_global_clip

__all__ = ["Interval", "OptimizerInfo", "OPTIMIZERS", "by_class", "fixed", "markdown_table"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """Valid float values `lo <= x <= hi` (and 0.0 when `or_zero`) that the generic tests draw.

    Ranges stop short of values where the reference itself is not finite on finite input (each
    such bound carries a comment at its record)."""

    lo: float
    hi: float
    or_zero: bool = False


def fixed(value: Any) -> Any:
    """A variant's value as one configuration: an `Interval` is its midpoint (also inside
    tuples); other values are themselves."""
    if isinstance(value, Interval):
        return (value.lo + value.hi) / 2
    if isinstance(value, tuple):
        return tuple(fixed(v) for v in value)
    return value


def _frozen(mapping: Mapping | None = None) -> Mapping:
    return types.MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True, eq=False)
class OptimizerInfo:
    """One optimizer: its functional factory, adapter class, reference and test metadata.

    name: the functional alias (`optax_like.<name>`); cls: the adapter class
    (`optax_like.optim.<cls>`, built from the `adapter` options (optim/__init__.py) unless
    `custom_class`); reference: the dotted path of the implementation we reproduce (torch's
    class, or another package's for optimizers torch lacks); summary: the README table's note.
    example: a representative configuration (default test runs, benchmarks); full: options that
    give the state every entry it can have. valid: argument -> `Interval` (or a tuple of them for
    pairs) the property tests draw from; flags: compile-time options -> values to try; variants:
    named configurations (fixed values, or `Interval`s replacing `valid`'s) the generic suites
    run beside the plain one. invalid: argument sets the reference rejects (our error must be
    its error, type and message). layout: "any", "matrix" (2-D params only) or "sparse" (row-sparse
    gradients); complex: complex params supported (else refused with the reference's error);
    complex_refused: argument sets under which the reference refuses complex params anyway (a
    configuration containing one of them: `refuses_complex`), with the error ours raises too;
    closure: a step evaluates a loss (LBFGS); groups: several param groups allowed.
    rtol32: float32 parity tolerance when the default does not hold (bf16 inner math).
    rtol64: float64 parity tolerance when the default does not hold: matrix work whose
    accumulation order the reference's BLAS picks per CPU (timm's Kron).
    layers_vectorised: stacked layers (`param_groups.stacked_transform`: a scan over layers,
    layer decay's lr per layer) are updated by one program vmapped over the layers, with the
    numbers of the slices run one by one, bit for bit (tests/param_groups/test_stacked.py);
    False where XLA compiles the vmapped math differently, or where each slice draws its own
    random values (timm's Kron: a param's index and group) (then the slices are run one by one).
    optax: the optax counterpart for benchmarks (`{lr}` is formatted), None where optax has
    none; moved_per_param: values per param one step must read or write (benchmarks' bandwidth
    bound); compute_bound: why a step is dominated by matrix work, not memory (left out of
    benchmarks/model_shapes.py's real-shape table). deviations: known differences from the
    reference, each with its reason.
    slow: the default test run takes only the record's example against the reference (float64
    parity in both views, tests/parity/test_optim_db.py; the class's state_dict and checkpoints
    both ways, tests/optim/test_classes_parity.py); every other generic case of the record is
    `slow` (a reference that compiles per configuration: torchao's torch.compile).
    known_failures: tests/parity/test_optim_db.py cases (`<config or variant>-<dtype>-<view>`)
    that fail by one of the record's deviations -> the reason (strict xfails).
    complex_refused_here: our own refusal (the TypeError's message, raised at `init`) where the
    reference takes complex params without supporting them (torchao's `p.float()` drops the
    imaginary part): a deviation; the generic test checks both sides.
    before_step: methods the reference needs called on a new instance before it steps
    (schedulefree's `train()`); the adapter class keeps that contract, so the generic suites
    build both through `new_reference` / `new_adapter`, which call them. `new_reference` also
    gives an argument the reference requires (torch's `required`: timm SGDP's lr) the example's
    value where the caller leaves it out (ours have defaults: the record's deviation).
    coupling: arguments by which the reference couples the params it updates -> the value that
    uncouples them (timm Lamb's `max_grad_norm`: one gradient-norm clip over every param; None:
    none). A coupled leaf's update depends on the other leaves, as the reference's does, so the
    suites that compare a leaf with the same leaf elsewhere (tests/test_tree_independence.py: a
    leaf alone and in a tree; tests/test_properties.py: the other leaves of a step with a None
    gradient against the full step) run with these values (`couples(kwargs)`: whether a
    configuration couples); the coupled numbers are the parity suites'. The adapter's
    counterpart, one clip over all param groups, is the `cross_group` adapter option
    (make_optimizer_class), which `param_groups.cross_group_transform` also applies over a
    plan's groups.
    rewritten_group_entries: param-group entries the reference's step overwrites -> why ours
    keeps the given value (timm Adafactor's relative-step `lr`: the last param's step size, a
    tensor of the RMS's rounding): tests/optim/test_classes_parity.py leaves them out of its
    comparison of the groups after steps (a deviation).
    draws: for a reference that draws random numbers inside its step (timm's Kron: Python's
    `random` and `torch.randn`), the dotted path of a function `draws(reference) -> reference`
    that `new_reference` applies to every new instance: from then on each of its steps draws the
    values ours draws (our public draw function, from the param's position, its group's position
    and its step), in its call order, so the generic suites compare numbers (a deviation: the
    draws are ours). A reference whose draws run over all its groups needs the `group_index`
    adapter option (make_optimizer_class), so that each group draws its own values.
    jit_rtol: for math that rounds mid-step to a narrow dtype (AdafactorBigVision's bfloat16
    momentum), the fraction of a leaf's scale by which `jax.jit(update)` and the eager update may
    differ (tests/test_properties.py): a value one float32 ulp apart (XLA's FMA contraction under
    jit) that sits on a bfloat16 rounding tie rounds to neighbouring bfloat16 values.
    """

    name: str
    cls: str
    reference: str
    summary: str
    example: Mapping = dataclasses.field(default_factory=_frozen)
    full: Mapping = dataclasses.field(default_factory=_frozen)
    valid: Mapping = dataclasses.field(default_factory=_frozen)
    flags: Mapping = dataclasses.field(default_factory=_frozen)
    variants: Mapping = dataclasses.field(default_factory=_frozen)
    invalid: tuple = ()
    layout: str = "any"
    complex: bool = True
    complex_refused: tuple = ()
    closure: bool = False
    groups: bool = True
    rtol32: float | None = None
    rtol64: float | None = None
    shapes: tuple = ((4, 3), (5,), ())
    adapter: Mapping = dataclasses.field(default_factory=_frozen)
    custom_class: bool = False
    layers_vectorised: bool = True
    optax: str | None = None
    optax_note: str = ""
    fused: bool = False
    moved_per_param: int = 5
    compute_bound: str = ""
    deviations: tuple = ()
    extra_functions: tuple = ()
    before_step: tuple = ()
    complex_refused_here: str = ""
    slow: bool = False
    known_failures: Mapping = dataclasses.field(default_factory=_frozen)
    coupling: Mapping = dataclasses.field(default_factory=_frozen)
    rewritten_group_entries: Mapping = dataclasses.field(default_factory=_frozen)
    jit_rtol: float | None = None
    draws: str | None = None

    def __post_init__(self):
        for field in ("example", "full", "valid", "flags", "variants", "adapter", "known_failures", "coupling",
                      "rewritten_group_entries"):
            object.__setattr__(self, field, _frozen(getattr(self, field)))
        if self.layout not in ("any", "matrix", "sparse"):
            raise ValueError(f"{self.name}: layout must be 'any', 'matrix' or 'sparse', got {self.layout!r}")

    @property
    def factory(self) -> Callable:
        """The functional factory, `optax_like.<name>`."""
        return getattr(_opt, self.name)

    def adapter_class(self) -> type:
        """The stateful class, `optax_like.optim.<cls>`."""
        from optax_like import optim

        return getattr(optim, self.cls)

    def new_reference(self, params, **kwargs):
        """A reference optimizer over `params`, ready to step (`before_step` called). An argument
        the reference requires (default torch's `required`: timm's SGDP lr) that `kwargs` leaves
        out takes the record's `example` value (ours has a default: the record's deviation); a
        loaded state dict then sets the groups' value, as for any other argument."""
        from torch.optim.optimizer import required as torch_required

        cls = self.reference_class()
        required = [k for k, p in inspect.signature(cls).parameters.items()
                    if p.default is torch_required and k not in kwargs]
        optimizer = cls(params, **{k: self.example[k] for k in required}, **kwargs)
        for method in self.before_step:
            getattr(optimizer, method)()
        if self.draws is not None:
            module, _, attr = self.draws.rpartition(".")
            optimizer = getattr(importlib.import_module(module), attr)(optimizer)
        return optimizer

    def new_adapter(self, params, **kwargs):
        """An adapter-class optimizer over `params`, ready to step (`before_step` called)."""
        optimizer = self.adapter_class()(params, **kwargs)
        for method in self.before_step:
            getattr(optimizer, method)()
        return optimizer

    def refuses_complex(self, kwargs: Mapping) -> bool:
        """Whether the reference refuses complex params in the configuration `kwargs` (arguments
        left out take the factory's defaults): always without `complex`, else where `kwargs`
        contains one of `complex_refused`'s argument sets."""
        if not self.complex:
            return True
        defaults = {k: p.default for k, p in inspect.signature(self.factory).parameters.items()}
        values = {**defaults, **kwargs}
        return any(all(values.get(k) == v for k, v in refused.items()) for refused in self.complex_refused)

    def couples(self, kwargs: Mapping) -> bool:
        """Whether the configuration `kwargs` (arguments left out take the factory's defaults)
        couples the params' updates (`coupling`)."""
        if not self.coupling:
            return False
        defaults = {k: p.default for k, p in inspect.signature(self.factory).parameters.items()}
        return any({**defaults, **kwargs}.get(k) != v for k, v in self.coupling.items())

    def variant_kwargs(self, variant: str) -> dict:
        """The configuration of a named variant: `example` with the variant's values (`fixed`)."""
        return {**self.example, **{k: fixed(v) for k, v in self.variants[variant].items()}}

    @property
    def reference_package(self) -> str:
        return self.reference.split(".", 1)[0]

    def reference_class(self) -> type:
        """The reference implementation's class (imports torch, or timm, schedulefree, ...)."""
        module, _, attr = self.reference.rpartition(".")
        return getattr(import_reference_module(module), attr)


def import_reference_module(module: str):
    """`importlib.import_module(module)`, without running the `__init__` of a package whose
    import pulls in what cannot load here: timm's imports torchvision (CUDA wheels on the
    package index). The package becomes a bare namespace over its files; its submodules import
    normally (timm.optim.lion needs only torch)."""
    if module.startswith("timm.") and "timm" not in sys.modules:
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("No module named 'timm' (pip install --no-deps timm==1.0.31)")
        root = list(spec.submodule_search_locations)
        for package, path in (("timm", root), ("timm.optim", [f"{root[0]}/optim"])):
            stub = types.ModuleType(package)
            stub.__path__, stub.__package__ = path, package
            # a spec, so that importlib.util.find_spec("timm") still answers after the stub
            stub.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
            stub.__spec__.submodule_search_locations = path
            sys.modules[package] = stub
    return importlib.import_module(module)


# beta2 >= 0.5: with beta2 near 0 the second moment forgets a gradient the first moment still
# holds, and lr * m / eps overflows float16 at the next zero gradient (the reference's too).
_ADAM_VALID = dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.5, 0.999)),
                   eps=Interval(1e-8, 1e-3), weight_decay=Interval(1e-4, 0.1, or_zero=True))
_WD = dict(weight_decay=Interval(1e-4, 0.1, or_zero=True))
_MAXIMIZE = dict(maximize=(False, True))
_BAD_EPS = dict(eps=-1e-8)
_BAD_BETAS = (dict(betas=(0.5, 1.0)), dict(betas=(-0.1, 0.5)))
_BAD_WD = dict(weight_decay=-1e-3)
_BAD_LR = dict(lr=-0.5)

# torchao 0.18's low-bit Adam family (torchao.optim, optax_like/optimizers/quantized_adam.py).
# Shapes: (64, 64) has 4096 values, the least torchao quantizes, in blocks of 256 and 128; the
# others keep plain moments.
_TORCHAO_DEVIATIONS = (
    "amsgrad=True: torchao 0.18 raises at the first step on a quantized state (torch.maximum has no "
    "kernel for its subclasses); here the max of the dequantized exp_avg_sq is kept, quantized with the "
    "unsigned map (small params: torchao's own float path, same numbers).",
    "Complex params are refused at init (TypeError, `complex_refused_here`); torchao casts them to real "
    "(`p.float()` drops the imaginary part, with a warning) and writes the real result back.",
    "bf16_stochastic_round=True with a bfloat16 param raises NotImplementedError at init (torchao draws "
    "torch's random numbers); `optax_like.apply_updates_stochastic` is the reproducible form.",
    "block_size must be a positive int (torchao fails at the first step for 0, later for the rest); 4-bit: "
    "a quantized param with an odd number of values is refused at init (torchao fails at its first step).",
    "block_size and bf16_stochastic_round are param-group entries here (torchao: optimizer attributes, "
    "not in param_groups), so a group may have its own block size.",
    "The step is emitted as the change `p_new - p` of torchao's float32 step (float64 params get its float32 "
    "value, 16-bit ones its rounding, as `p.copy_(p_f32)`), which `apply_updates` adds back: exact unless "
    "p_new and p are more than a factor 2 apart (then within an ulp of p_new).",
    "A 0-d float64 param steps here; torchao 0.18's compiled step (torch 2.13 inductor, CPU) leaves it and its "
    "state unchanged (its eager step, `torch.compile` off, updates it as here).",
)


def _torchao_adam(name: str, cls: str, summary: str) -> OptimizerInfo:
    return OptimizerInfo(
        name, cls, f"torchao.optim.{cls}", summary,
        example=dict(lr=1e-2, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.5, 0.999)),
                   eps=Interval(1e-8, 1e-3), weight_decay=Interval(1e-4, 0.1, or_zero=True)),
        variants=dict(no_decay=dict(weight_decay=0.0, betas=(0.8, 0.99)),
                      plain=dict(block_size=96)),  # 4096 % 96 != 0: every moment stays float
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS),
        # no 0-d param: torchao's compiled step leaves a 0-d float64 param and its state unchanged
        # (eager torchao steps it as here; deviations)
        complex=False, shapes=((64, 64), (5,), (4, 3)),
        # torchao's compiled step against its own eager one (torch.compile off): <= 1.12e-7 relative
        # (floor 1) over 20 steps in every configuration here; ours against the compiled one: the
        # same, in both dtypes (the codes are its eager step's). Bound: 4 float32 ulps of |p| ~ 2
        # (both dtypes: float64 params step in float32, as torchao's).
        rtol32=5e-7,
        optax="optax.adam({lr}, mu_dtype='bfloat16')", optax_note="bfloat16 first moment, no quantization",
        moved_per_param=4, deviations=_TORCHAO_DEVIATIONS,
        complex_refused_here="quantized Adam states: complex params are not supported (torchao casts them to real, dropping the imaginary part)",
        slow=True,  # torchao compiles a step per param shape and configuration: the default run takes the example
    )


# schedulefree's classes (optim/schedule_free.py)
_SCHEDULE_FREE_DEVIATIONS = (
    "Class `defaults` hold the constructor's arguments; schedulefree's also list its group entries (`k`, "
    "`train_mode`, `weight_sum`, `lr_max`, `scheduled_lr`), which here are the groups' entries, as there.",
    "A live group's `k`, `weight_sum`, `lr_max`, `scheduled_lr` are device scalars after a step (no host sync; "
    "a float's float32 high word without x64); `state_dict()` has schedulefree's exact Python values.",
    "Without x64 the class's traced hyperparameters are float32 (lr rounded before schedulefree's float64 "
    "scalar math): params within a few float32 ulps of schedulefree's, not bit for bit (the factory with host "
    "floats keeps the float64 math).",
    "torch's CPU kernels fuse `add_(x, alpha=)`, `lerp_` and `addcmul_` into one rounding (`vec::fmadd`); here "
    "they are `a * b + c`, which XLA may or may not contract: float32 params within 1.5-8 ulps of the largest "
    "after 10,000 steps (measured), float64 within 1e-12. An exact emulation cost 1.8-1.9x optax's step.",
)
# What the three schedule-free records share:
# - r, weight_lr_power: compile-time in the class, so the averaging weights are schedulefree's
#   float64 host math;
# - optim/schedule_free.py: train()/eval() (`before_step`), group entries;
# - slow: each configuration compiles its double-float (float64 host math) step, ~1-2 s: the
#   default run takes the example's parity;
# - layers_vectorised=False: with a per-layer lr, the vmapped double-float scalar math rounds a
#   few elements an ulp apart from the slices' (measured).
_SCHEDULE_FREE: dict[str, Any] = dict(
    adapter=dict(static=("r", "weight_lr_power")), custom_class=True, before_step=("train",), slow=True,
    layers_vectorised=False, deviations=_SCHEDULE_FREE_DEVIATIONS)

# timm's Adahessian: optim_db's runs that cannot match (strict xfails)
_ADAHESSIAN_PARTS = ("multi_transform's parts each see only their own params, which value_fn (a loss of the whole "
                     "list) cannot take; the class view of this run (one Hessian-vector product over both groups, "
                     "as timm) passes")

_RECORDS = [
    OptimizerInfo(
        "sgd", "SGD", "torch.optim.SGD",
        "buffer starts at the first gradient; dampening; nesterov",
        example=dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        full=dict(momentum=0.9, weight_decay=0.1),
        valid=dict(lr=Interval(0.0, 1.0), **_WD),
        flags=_MAXIMIZE,
        variants=dict(
            momentum=dict(momentum=Interval(0.01, 0.99), dampening=Interval(0.0, 1.0)),
            nesterov=dict(nesterov=True, dampening=0.0, momentum=Interval(0.01, 0.99)),
        ),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum=-0.1), dict(nesterov=True), dict(momentum=0.9, dampening=0.1, nesterov=True)),
        adapter=dict(structural_zero=("momentum",)),
        optax="optax.sgd({lr}, momentum=0.9)", fused=True, moved_per_param=5,
    ),
    OptimizerInfo(
        "adam", "Adam", "torch.optim.Adam",
        "AMSGrad on the raw second moment; `decoupled_weight_decay`",
        example=dict(lr=0.01, weight_decay=0.1, amsgrad=True),
        full=dict(amsgrad=True, weight_decay=0.1),
        valid=_ADAM_VALID,
        flags=dict(amsgrad=(False, True), maximize=(False, True), decoupled_weight_decay=(False, True)),
        variants=dict(decoupled=dict(decoupled_weight_decay=True), zero_betas=dict(betas=(0.0, 0.0))),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS, dict(betas=(0, 0.99))),
        optax="optax.adam({lr})", fused=True, moved_per_param=7,
    ),
    OptimizerInfo(
        "adamw", "AdamW", "torch.optim.AdamW",
        "`p *= 1 - lr*wd` before the moments; default `weight_decay=1e-2`",
        example=dict(lr=0.01),
        full=dict(amsgrad=True),
        valid=_ADAM_VALID,
        flags=dict(amsgrad=(False, True), maximize=(False, True)),
        variants=dict(zero_betas=dict(betas=(0.0, 0.0)), strong_decay=dict(weight_decay=0.5, betas=(0.5, 0.99))),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS, dict(betas=(0, 0.99))),
        adapter=dict(constants={"decoupled_weight_decay": True}),
        optax="optax.adamw({lr}, weight_decay=1e-2)", fused=True, moved_per_param=7,
    ),
    OptimizerInfo(
        "adamax", "Adamax", "torch.optim.Adamax",
        "`max(beta2*u, abs(g) + eps)`",
        example=dict(lr=0.01, weight_decay=0.1),
        valid=_ADAM_VALID,
        flags=_MAXIMIZE,
        variants=dict(eps_wins=dict(betas=(0.5, 0.9), eps=1e-3), zero_betas=dict(betas=(0.0, 0.0))),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS),
        optax="optax.adamax({lr})", moved_per_param=7,
    ),
    OptimizerInfo(
        "nadam", "NAdam", "torch.optim.NAdam",
        "`mu_t` schedule and running `mu_product`; `decoupled_weight_decay`",
        example=dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01),
        valid=dict(_ADAM_VALID, momentum_decay=Interval(0.0, 1e-2)),
        flags=dict(decoupled_weight_decay=(False, True), maximize=(False, True)),
        variants=dict(no_momentum_decay=dict(momentum_decay=0.0),
                      fast_momentum_decay=dict(momentum_decay=0.5, betas=(0.8, 0.99), eps=1e-6),
                      zero_betas=dict(betas=(0.0, 0.0))),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS),
        optax="optax.nadam({lr})", optax_note="other momentum schedule", moved_per_param=7,
    ),
    OptimizerInfo(
        "radam", "RAdam", "torch.optim.RAdam",
        "`rho_t > 5` switch at torch's exact step",
        example=dict(lr=0.01, betas=(0.9, 0.7)),  # rho_inf = 5.67: rectified from step 10
        valid=_ADAM_VALID,
        flags=dict(decoupled_weight_decay=(False, True), maximize=(False, True)),
        variants=dict(never_rectified=dict(betas=(0.9, 0.6)),  # rho_inf = 4
                      zero_betas=dict(betas=(0.0, 0.0))),  # rho_inf = 1
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS),
        optax="optax.radam({lr})", moved_per_param=7,
    ),
    OptimizerInfo(
        "adagrad", "Adagrad", "torch.optim.Adagrad",
        "`lr_decay`, `initial_accumulator_value`, eps outside the sqrt",
        example=dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
        # a per-layer lr divided by the shared `1 + (t - 1) lr_decay`: XLA turns the vmapped
        # division into a product with its reciprocal (one ulp off the slices' division)
        layers_vectorised=False,
        valid=dict(lr=Interval(1e-4, 1.0), lr_decay=Interval(1e-4, 0.1, or_zero=True),
                   initial_accumulator_value=Interval(1e-3, 1.0, or_zero=True), eps=Interval(1e-10, 1e-3), **_WD),
        flags=_MAXIMIZE,
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, dict(initial_accumulator_value=-1)),
        optax="optax.adagrad({lr}, initial_accumulator_value=0.0, eps=1e-10)", fused=True, moved_per_param=5,
    ),
    OptimizerInfo(
        "adadelta", "Adadelta", "torch.optim.Adadelta",
        "eps inside both square roots",
        example=dict(lr=1.0, weight_decay=0.1),
        valid=dict(lr=Interval(0.0, 1.0), rho=Interval(0.0, 1.0), eps=Interval(1e-6, 1e-2), **_WD),
        flags=_MAXIMIZE,
        variants=dict(rho_one=dict(rho=1.0), rho_zero=dict(rho=0.0, eps=1e-4)),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, dict(rho=-0.1), dict(rho=1.1)),
        optax="optax.adadelta({lr}, rho=0.9, eps=1e-6)", moved_per_param=7,
    ),
    OptimizerInfo(
        "rmsprop", "RMSprop", "torch.optim.RMSprop",
        "`centered`; momentum buffer starts at zero",
        example=dict(lr=0.01, momentum=0.5, centered=True),
        full=dict(momentum=0.9, centered=True),
        # alpha >= 0.5: centered RMSprop takes sqrt(square_avg - grad_avg^2), which rounds
        # negative (NaN, as in torch) when alpha * (1 - alpha) is below the dtype's resolution.
        valid=dict(lr=Interval(1e-4, 0.1), alpha=Interval(0.5, 0.99), eps=Interval(1e-8, 1e-3),
                   momentum=Interval(0.01, 0.9), **_WD),
        flags=dict(centered=(True, False), maximize=(False, True)),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, dict(alpha=-1), dict(momentum=-1.0)),
        adapter=dict(structural_zero=("momentum",)),
        optax="optax.rmsprop({lr}, decay=0.99, eps=1e-8)", moved_per_param=5,
    ),
    OptimizerInfo(
        "asgd", "ASGD", "torch.optim.ASGD",
        "`eta`, `mu`, averaged params `ax`",
        example=dict(lr=0.01, t0=2.0, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), lambd=Interval(0.0, 1e-2), alpha=Interval(0.0, 1.0),
                   t0=Interval(0.0, 3.0), **_WD),
        flags=_MAXIMIZE,
        variants=dict(averaging=dict(lr=0.05, lambd=0.01, alpha=0.5, t0=5.0, weight_decay=0.05)),
        invalid=(_BAD_LR, _BAD_WD),
        moved_per_param=5, extra_functions=("asgd_averaged_params",),
    ),
    OptimizerInfo(
        "rprop", "Rprop", "torch.optim.Rprop",
        "sign logic, clamped step sizes starting at `lr`",
        example=dict(lr=0.01),
        valid=dict(lr=Interval(1e-4, 1.0), etas=(Interval(0.1, 0.9), Interval(1.1, 3.0)),
                   step_sizes=(Interval(1e-6, 1e-3), Interval(1.0, 50.0))),
        flags=_MAXIMIZE,
        # the clamps bind: random gradients change sign every other step
        variants=dict(clamped=dict(lr=0.1, etas=(0.3, 2.0), step_sizes=(1e-2, 0.15)),
                      fast=dict(lr=1e-3, etas=(0.1, 1.9), step_sizes=(5e-4, 50.0))),
        invalid=(_BAD_LR, dict(etas=(0.5, 1.0)), dict(etas=(0.0, 1.2)), dict(etas=(1.0, 0.5))),
        moved_per_param=7,
    ),
    OptimizerInfo(
        "sparse_adam", "SparseAdam", "torch.optim.SparseAdam",
        "row-sparse gradients (BCOO or indices/values); untouched rows stay bit-identical",
        example=dict(lr=0.01),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)),
                   eps=Interval(1e-8, 1e-3)),
        flags=_MAXIMIZE,
        invalid=(_BAD_LR, *_BAD_BETAS, dict(lr=0.0), dict(eps=0.0)),
        layout="sparse", complex=False, shapes=((6, 3), (5,)),
        adapter=dict(dense_params_only=True),
        moved_per_param=7,
    ),
    OptimizerInfo(
        "adafactor", "Adafactor", "torch.optim.Adafactor",
        "torch's variant: factored second moment, `beta2_decay`, `d`",
        example=dict(lr=0.01),
        valid=dict(lr=Interval(1e-4, 0.1), beta2_decay=Interval(-1.0, 0.0),
                   # eps1 >= 1e-18: the clamp is eps1**2, which flushes to 0 in float32 below
                   # ~1e-19 and then a zero gradient gives 0 * rsqrt(0) = NaN (torch too).
                   eps=(Interval(1e-18, 1e-6), Interval(1e-4, 1e-2)),
                   d=Interval(1.0, 5.0), **_WD),
        flags=_MAXIMIZE,
        variants=dict(eps1_clamps=dict(lr=0.5, eps=(0.1, 0.0))),  # eps1 large enough to clamp; eps2 = 0
        invalid=(_BAD_LR, _BAD_WD, dict(eps=(None, -1.0)), dict(beta2_decay=0.5), dict(d=0.0)),
        complex=False, shapes=((4, 3), (5,), (2, 3, 4), ()),
        layers_vectorised=False,  # with a per-layer lr, `-alpha / denom` rounds differently vmapped (measured)
        optax="optax.adafactor({lr})", optax_note="other algorithm (Shazeer's)", moved_per_param=3,
    ),
    OptimizerInfo(
        "muon", "Muon", "torch.optim.Muon",
        "2-D params, Newton-Schulz in bfloat16, `adjust_lr_fn`",
        example=dict(lr=0.02),
        valid=dict(lr=Interval(1e-4, 0.02), weight_decay=Interval(0.0, 0.1), momentum=Interval(0.0, 0.99)),
        flags=dict(nesterov=(True, False), adjust_lr_fn=(None, "original", "match_rms_adamw")),
        variants=dict(plain_momentum=dict(weight_decay=0.0, momentum=0.8, nesterov=False),
                      newton_schulz=dict(momentum=0.8, ns_steps=6, ns_coefficients=(3.4, -4.7, 2.0)),
                      original=dict(eps=1e-3, adjust_lr_fn="original")),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum=-1), dict(adjust_lr_fn="match_rms")),
        layout="matrix", complex=False, shapes=((4, 3), (3, 5)),
        rtol32=1e-3,  # bf16 Newton-Schulz on both sides, gemm accumulation order (test_muon.py)
        adapter=dict(static=("ns_steps",)),
        optax="optax.contrib.muon({lr})", optax_note="other algorithm details", moved_per_param=5,
    ),
    OptimizerInfo(
        "lbfgs", "LBFGS", "torch.optim.LBFGS",
        "one jitted `lax.while_loop` per torch `step(closure)`; strong Wolfe",
        example=dict(lr=1.0, history_size=5, max_iter=5, line_search_fn="strong_wolfe"),
        valid=dict(lr=Interval(0.1, 1.0)),
        flags=dict(line_search_fn=(None, "strong_wolfe")),
        invalid=(_BAD_LR,),
        closure=True, groups=False, shapes=((4, 3), (5,)), custom_class=True,
        extra_functions=("lbfgs_history",),
    ),
    OptimizerInfo(
        "adahessian", "Adahessian", "timm.optim.adahessian.Adahessian",
        "Hutchinson `z * (H z)` estimates (Rademacher probes, `n_samples`, every `update_each` steps) as Adam's second moment, `hessian_power`; `step(loss_fn)`",
        example=dict(lr=0.1, weight_decay=1e-2),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.5, 0.999)),
                   eps=Interval(1e-8, 1e-3), hessian_power=Interval(0.1, 1.0), **_WD),
        flags=dict(avg_conv_kernel=(False, True)),
        variants=dict(
            power=dict(hessian_power=0.5, betas=(0.8, 0.99)), every_3=dict(update_each=3, n_samples=2),
            conv=dict(avg_conv_kernel=True, update_each=2), no_decay=dict(weight_decay=0.0),
        ),
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS, dict(hessian_power=1.5), dict(hessian_power=-0.1)),
        complex=False,
        complex_refused_here=("Adahessian: complex params are not supported (timm's real Rademacher probes cannot be "
                              "grad_outputs of complex gradients)"),
        # a step differentiates a loss twice (`closure`): the gradient-driven generic suites leave it out;
        # tests/parity/test_optim_db.py runs it on its separable closure loss (a diagonal Hessian: the estimate
        # is exact whatever the probes, timm's own generator included); tests/transforms/test_adahessian.py and
        # tests/optim/test_adahessian.py on a coupled loss with our probes fed to timm's torch.randint, with
        # state dicts both ways
        closure=True, custom_class=True, shapes=((4, 3), (3,), (2, 3, 2, 2), ()),
        adapter=dict(static=("update_each", "n_samples", "avg_conv_kernel")),
        optax=None, moved_per_param=9,
        slow=True,  # the default run is at its time budget: the full matrix runs under `-m slow`
        known_failures={
            **{f"two_groups-{dtype}-functional": _ADAHESSIAN_PARTS for dtype in ("float64", "float32")},
        },
        deviations=(
            "The probes are JAX's PRNG (a key in the state, seeded with timm's 2147483647, the adapter's group "
            "index folded in), not torch's generator: the same distribution, other numbers (the parity tests "
            "feed ours to timm's `torch.randint`).",
            "Hessian-vector products are forward over reverse (`jax.jvp` of `jax.grad`; timm: reverse over "
            "reverse): the same products, rounded apart by a few ulps.",
            "timm keeps the estimate on the param (`p.hess`) and its generator outside its state dict; so "
            "here (internal, FRESH): after `load_state_dict` every param recomputes its estimate at the next "
            "step and the key restarts from the seed, as a resumed timm run does.",
            "Complex params are refused at init (TypeError, `complex_refused_here`).",
            "`update_each`, `n_samples` and `avg_conv_kernel` are compile-time group entries (timm: optimizer "
            "attributes; the adapter requires one n_samples for all groups, as timm's).",
            "`n_samples` or `update_each` below 1 is refused at construction (ValueError naming it: the factory, the "
            "class, `scale_by_adahessian`; `n_samples` also by `hutchinson`): timm accepts them and fails at its "
            "first step (no probe: its estimate stays the float 0.0, an `addcmul_()` TypeError; `% 0`: "
            "ZeroDivisionError).",
        ),
    ),
    OptimizerInfo(
        "lion", "Lion", "timm.optim.lion.Lion",
        "`sign(lerp(m, g, 1 - beta1))`, decoupled decay; `caution`, `corrected_weight_decay`",
        example=dict(lr=1e-3, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)), **_WD),
        flags=dict(caution=(False, True), maximize=(False, True)),
        variants=dict(caution=dict(caution=True), corrected=dict(corrected_weight_decay=True, weight_decay=0.1)),
        invalid=(_BAD_LR, *_BAD_BETAS),
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}),
        optax="optax.lion({lr}, weight_decay=0.0)", moved_per_param=5,
        deviations=("A subnormal interpolated momentum has sign 0 here (XLA:CPU flushes subnormal results "
                    "to zero; timm's sign is +-1): a whole lr step apart, only for |m| < 1.2e-38 in float32 "
                    "(tests/test_properties.py draws no nonzero value below 1e-20).",),
    ),
    OptimizerInfo(
        "adopt", "Adopt", "timm.optim.adopt.Adopt",
        "second moment one step behind; clipped normalised gradient; `decoupled`, `caution`",
        example=dict(lr=1e-2, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.9999)),
                   eps=Interval(1e-8, 1e-3), clip_exp=Interval(0.1, 0.5), **_WD),
        flags=dict(decoupled=(False, True), caution=(False, True), maximize=(False, True)),
        variants=dict(decoupled=dict(decoupled=True, weight_decay=0.1), caution=dict(caution=True),
                      corrected=dict(decoupled=True, corrected_weight_decay=True, weight_decay=0.1),
                      # eps >= 1e-3 unclipped: a gradient after a zero one is normalised to |g| / eps,
                      # beyond float16's range (65504) for |g| = 10 and eps < 1.5e-4 (timm: inf too).
                      no_clip=dict(clip_exp=None, eps=Interval(1e-3, 1e-2))),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS),
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}),
        optax="optax.contrib.adopt({lr})", moved_per_param=7,
    ),
    OptimizerInfo(
        "laprop", "LaProp", "timm.optim.laprop.LaProp",
        "momentum of `g / (sqrt(v / (1 - beta2^t)) + eps)`, lr-weighted bias correction; decay after the step; `caution`, `corrected_weight_decay`",
        example=dict(lr=1e-2, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)),
                   eps=Interval(1e-8, 1e-3), **_WD),
        flags=dict(caution=(False, True)),
        variants=dict(caution=dict(caution=True), no_decay=dict(weight_decay=0.0),
                      corrected=dict(corrected_weight_decay=True, weight_decay=0.1)),
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS, dict(lr=0.0, corrected_weight_decay=True)),
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}),
        optax=None, moved_per_param=7,
    ),
    OptimizerInfo(
        "sgdw", "SGDW", "timm.optim.sgdw.SGDW",
        "SGD's momentum rule, `p *= 1 - lr*wd` before the step; `caution`, `corrected_weight_decay`",
        example=dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        full=dict(momentum=0.9, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 1.0), momentum=Interval(0.01, 0.99), dampening=Interval(0.0, 1.0), **_WD),
        flags=_MAXIMIZE,  # caution: variants (complex params are refused with it)
        variants=dict(
            nesterov=dict(nesterov=True, dampening=0.0, momentum=Interval(0.01, 0.99)),
            caution=dict(caution=True), caution_nesterov=dict(caution=True, nesterov=True, dampening=0.0),
            no_momentum=dict(momentum=0.0), corrected=dict(corrected_weight_decay=True, weight_decay=0.1),
        ),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum=-0.1), dict(nesterov=True),
                 dict(momentum=0.9, dampening=0.1, nesterov=True), dict(lr=0.0, corrected_weight_decay=True)),
        # caution's `u * g > 0` on complex tensors (timm views none as real pairs here)
        complex_refused=(dict(caution=True),),
        adapter=dict(structural_zero=("momentum",), snapshots={"max_lr_snapshot": "lr"}),
        optax=None, moved_per_param=5,
    ),
    OptimizerInfo(
        "lars", "Lars", "timm.optim.lars.Lars",
        "layer-wise trust ratio with the decay, then SGD's momentum rule; `trust_clip` (LARC), `always_adapt`",
        example=dict(lr=0.1, momentum=0.9, weight_decay=0.01, trust_coeff=0.1),
        full=dict(momentum=0.9, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 1.0), momentum=Interval(0.01, 0.99), trust_coeff=Interval(1e-4, 0.1),
                   eps=Interval(1e-8, 1e-3), **_WD),
        flags=dict(trust_clip=(False, True), always_adapt=(False, True)),
        variants=dict(
            nesterov=dict(nesterov=True, dampening=0.0), dampening=dict(dampening=Interval(0.0, 1.0)),
            clip=dict(trust_clip=True), always_adapt=dict(always_adapt=True, weight_decay=0.0),
            no_momentum=dict(momentum=0.0), no_decay=dict(weight_decay=0.0),
        ),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum=-0.1), dict(nesterov=True),
                 dict(momentum=0.9, dampening=0.1, nesterov=True)),
        adapter=dict(structural_zero=("momentum",)),
        optax="optax.lars({lr}, momentum=0.9)", optax_note="other trust ratio (no decay term)", moved_per_param=5,
    ),
    OptimizerInfo(
        "adabelief", "AdaBelief", "timm.optim.adabelief.AdaBelief",
        "EMA of `(g - m)^2 + eps`; RAdam's rectification at `rho_t >= 5`; decoupled, fixed or coupled decay; `amsgrad`",
        example=dict(lr=1e-2, weight_decay=0.1, eps=1e-8),
        full=dict(amsgrad=True),
        # beta2 <= 0.99: rho_t reaches 5 by step 6, so the runs see both of rectify's branches.
        # eps >= 1e-6: a zero residual leaves s = eps, and g / (sqrt(eps) + eps) * lr overflows
        # float16 below that (timm too); float16 state also flushes eps < 6e-8 (the deviation).
        # beta1 >= 0.5: the belief's residual g - m_t is beta1 * g at a first step, and its
        # cancellation multiplies any rounding difference in m_t (jit's contracted lerp against
        # eager's, tests/test_properties.py) by ~1 / beta1.
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.5, 0.99), Interval(0.0, 0.99)),
                   eps=Interval(1e-6, 1e-3), weight_decay=Interval(1e-4, 0.1, or_zero=True)),
        # amsgrad: variants (complex params are refused with it)
        flags=dict(decoupled_decay=(True, False), fixed_decay=(False, True), rectify=(True, False),
                   degenerated_to_sgd=(True, False)),
        variants=dict(
            plain=dict(rectify=False), amsgrad=dict(rectify=False, amsgrad=True),
            rectified_amsgrad=dict(amsgrad=True), not_degenerated=dict(degenerated_to_sgd=False),
            coupled=dict(decoupled_decay=False), fixed=dict(fixed_decay=True, weight_decay=0.01),
            fast_beta2=dict(betas=(0.8, 0.9)),
        ),
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS),
        complex_refused=(dict(amsgrad=True),),  # timm's torch.max on complex tensors
        optax="optax.adabelief({lr})", optax_note="no rectification, eps placement", moved_per_param=7,
        deviations=("bfloat16/float16 params: timm keeps exp_avg, exp_avg_var and max_exp_avg_var in float32 "
                    "(and loads them so); here they are kept in the params' dtype, as every optimizer's buffers "
                    "(the step itself is computed in float32 as timm's): the params stay within a few ulps of "
                    "timm's (tests/test_generic.py), the state differs by its bf16/f16 rounding; an eps below "
                    "float16's smallest subnormal (6e-8, e.g. the default 1e-16) vanishes from a float16 "
                    "`exp_avg_var`, which matters where the residual g - m is 0.",),
    ),
    OptimizerInfo(
        "nadamw", "NAdamW", "timm.optim.nadamw.NAdamW",
        "Adam with the look-ahead `lerp(m_t, g, 1 - beta1)`, decoupled decay; `caution`, `clipping_threshold` (StableAdamW), `corrected_weight_decay`",
        example=dict(lr=1e-2, weight_decay=0.1),
        valid=dict(_ADAM_VALID, clipping_threshold=Interval(0.1, 2.0)),
        flags=dict(caution=(False, True), maximize=(False, True)),
        variants=dict(caution=dict(caution=True), clipped=dict(clipping_threshold=0.5),
                      corrected=dict(corrected_weight_decay=True), no_decay=dict(weight_decay=0.0)),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, *_BAD_BETAS, dict(lr=0.0, corrected_weight_decay=True)),
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}),
        optax="optax.nadamw({lr})", moved_per_param=7,
    ),
    OptimizerInfo(
        "madgrad", "MADGRAD", "timm.optim.madgrad.MADGRAD",
        "dual averaging with `(lr + eps) sqrt(t)` weights and a cube-root denominator; momentum as an average of iterates",
        example=dict(lr=1e-2, weight_decay=0.01),
        full=dict(momentum=0.9),
        valid=dict(lr=Interval(1e-4, 0.1), momentum=Interval(0.0, 0.99), eps=Interval(1e-8, 1e-3), **_WD),
        flags=dict(decoupled_decay=(False, True)),
        variants=dict(no_momentum=dict(momentum=0.0), decoupled=dict(decoupled_decay=True),
                      no_decay=dict(weight_decay=0.0)),
        invalid=(dict(lr=0.0), dict(lr=-0.5), dict(momentum=1.0), dict(momentum=-0.1), _BAD_WD, _BAD_EPS),
        adapter=dict(structural_zero=("momentum",)),
        optax=None, moved_per_param=9,
    ),
    OptimizerInfo(
        "rmsprop_tf", "RMSpropTF", "timm.optim.rmsprop_tf.RMSpropTF",
        "TensorFlow's RMSprop: `sq` starts at 1, eps inside the root, lr inside the momentum; `centered`, `caution`, decoupled decay",
        example=dict(lr=1e-2, momentum=0.9, weight_decay=0.01),
        full=dict(momentum=0.9, centered=True),
        # alpha >= 0.5: centered, sq - ga^2 rounds negative (NaN, as in timm) when alpha (1 - alpha)
        # is below the dtype's resolution
        valid=dict(lr=Interval(1e-4, 0.1), alpha=Interval(0.5, 0.99), eps=Interval(1e-10, 1e-3),
                   momentum=Interval(0.01, 0.9), **_WD),
        flags=dict(centered=(False, True), decoupled_decay=(False, True), lr_in_momentum=(True, False)),
        variants=dict(
            centered=dict(centered=True), no_momentum=dict(momentum=0.0), lr_outside=dict(lr_in_momentum=False),
            caution=dict(caution=True), decoupled=dict(decoupled_decay=True),
            corrected=dict(decoupled_decay=True, corrected_weight_decay=True),
        ),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, dict(momentum=-0.1), dict(alpha=-0.1),
                 dict(lr=0.0, corrected_weight_decay=True)),
        # caution's `u * g > 0` on complex tensors (with momentum)
        complex_refused=(dict(caution=True),),
        adapter=dict(structural_zero=("momentum",), snapshots={"max_lr_snapshot": "lr"}),
        optax=None, moved_per_param=7,
    ),
    OptimizerInfo(
        "adamw_legacy", "AdamWLegacy", "timm.optim.adamw.AdamWLegacy",
        "AdamW with `p *= 1 - lr*wd` first; `amsgrad`, `caution`, `clipping_threshold` (StableAdamW), `corrected_weight_decay`",
        example=dict(lr=1e-2, weight_decay=0.1),
        full=dict(amsgrad=True),
        valid=dict(_ADAM_VALID, clipping_threshold=Interval(0.1, 2.0)),
        flags=dict(amsgrad=(False, True), caution=(False, True), maximize=(False, True)),
        variants=dict(caution=dict(caution=True), clipped=dict(clipping_threshold=0.5),
                      amsgrad_clipped=dict(amsgrad=True, clipping_threshold=0.5),
                      corrected=dict(corrected_weight_decay=True), no_decay=dict(weight_decay=0.0)),
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS, dict(lr=0.0, corrected_weight_decay=True)),
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}),
        optax="optax.adamw({lr}, weight_decay=1e-2)", moved_per_param=7,
    ),
    OptimizerInfo(
        "nadam_legacy", "NAdamLegacy", "timm.optim.nadam.NAdamLegacy",
        "Keras's warming momentum schedule `beta1 (1 - 0.5 * 0.96^(t * schedule_decay))`, per-param `m_schedule`",
        example=dict(lr=1e-2, weight_decay=0.1, schedule_decay=0.05),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)),
                   eps=Interval(1e-8, 1e-3), schedule_decay=Interval(0.0, 0.1), **_WD),
        variants=dict(default_schedule=dict(schedule_decay=4e-3), no_decay=dict(weight_decay=0.0)),
        invalid=(_BAD_LR,),
        optax=None, moved_per_param=7,
    ),
    OptimizerInfo(
        "mars", "Mars", "timm.optim.mars.Mars",
        "variance-reduced `c = g + gamma b1/(1-b1) (g - g_prev)`, clipped to norm 1; AdamW or Lion type; 1-D params: AdamW",
        example=dict(lr=1e-2, weight_decay=0.1, gamma=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)),
                   eps=Interval(1e-8, 1e-3), gamma=Interval(0.0, 0.5), lr_1d_factor=Interval(0.1, 2.0), **_WD),
        flags=dict(optimize_1d=(False, True)),
        variants=dict(lion=dict(mars_type="lion", lr=1e-3), optimize_1d=dict(optimize_1d=True),
                      betas_1d=dict(betas_1d=(0.8, 0.9), lr_1d_factor=0.5), caution=dict(caution=True),
                      caution_lion=dict(caution=True, mars_type="lion", lr=1e-3)),
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS, dict(mars_type="sgd")),
        # the lion type's torch.sign and caution's `u * g > 0` on complex tensors
        complex_refused=(dict(mars_type="lion"), dict(caution=True)),
        # timm fills `betas_1d` with the constructor's betas: groups with other betas keep those
        adapter=dict(snapshots={"betas_1d": "betas"}),
        optax=None, moved_per_param=9,
        deviations=("mars_type 'lion': a subnormal momentum entry has sign 0 here (XLA:CPU flushes subnormals "
                    "to zero), as timm's Lion (see `lion`).",),
    ),
    OptimizerInfo(
        "adamp", "AdamP", "timm.optim.adamp.AdamP",
        "Adam without the radial part of the update on scale-invariant weights (per channel, then per layer); `wd_ratio`, `nesterov`, `caution`",
        example=dict(lr=1e-2, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)),
                   eps=Interval(1e-8, 1e-3), delta=Interval(0.0, 2.0), wd_ratio=Interval(0.0, 1.0), **_WD),
        flags=dict(nesterov=(False, True), caution=(False, True)),
        # delta=10: every matrix projects by channel (random gradients give |cos| ~ 0.5 per row)
        variants=dict(projected=dict(delta=10.0), nesterov=dict(nesterov=True, delta=10.0),
                      caution=dict(caution=True), caution_projected=dict(caution=True, delta=10.0),
                      no_decay=dict(weight_decay=0.0)),
        complex=False,  # matrices: torch's cosine similarity is real only (1-D complex: as timm, untested)
        shapes=((4, 3), (5,), (2, 3, 2), ()),
        optax=None, moved_per_param=7,
        deviations=("An empty matrix param (a zero-size dimension) steps as a vector here; timm's projection "
                    "raises on it (ZeroDivisionError for delta / sqrt(0), or max() of an empty tensor).",),
    ),
    # -- timm: SGDP, RAdamLegacy, NvNovoGrad --
    OptimizerInfo(
        "sgdp", "SGDP", "timm.optim.sgdp.SGDP",
        "SGD's momentum (buffer from zeros, damped from step 1) without the radial part on scale-invariant weights (AdamP's projection); decay `lr*wd*wd_ratio/(1-momentum)`; `nesterov`, `caution`",
        example=dict(lr=0.1, momentum=0.9, weight_decay=0.01),
        full=dict(momentum=0.9),
        valid=dict(lr=Interval(1e-4, 1.0), momentum=Interval(0.0, 0.9), dampening=Interval(0.0, 1.0),
                   eps=Interval(1e-8, 1e-3), delta=Interval(0.0, 2.0), wd_ratio=Interval(0.0, 1.0), **_WD),
        flags=dict(nesterov=(False, True), caution=(False, True)),
        # delta=10: every matrix projects by channel (random gradients give |cos| ~ 0.5 per row)
        variants=dict(projected=dict(delta=10.0), nesterov=dict(nesterov=True, delta=10.0),
                      dampening=dict(dampening=0.5), caution=dict(caution=True),
                      caution_projected=dict(caution=True, delta=10.0, nesterov=True),
                      no_momentum=dict(momentum=0.0), no_decay=dict(weight_decay=0.0)),
        complex=False,  # matrices: torch's cosine similarity is real only (1-D complex: as timm, untested)
        shapes=((4, 3), (5,), (2, 3, 2), ()),
        optax=None, moved_per_param=5, slow=True,
        deviations=("An empty matrix param (a zero-size dimension) steps as a vector here; timm's projection "
                    "raises on it (ZeroDivisionError for delta / sqrt(0), or max() of an empty tensor).",
                    "lr defaults to 1e-3 (torch.optim.SGD's default); timm's SGDP requires it (torch's `required`: "
                    "constructing without lr raises ValueError).",),
    ),
    OptimizerInfo(
        "radam_legacy", "RAdamLegacy", "timm.optim.radam.RAdamLegacy",
        "the original RAdam: `rho_t >= 5` switch, eps outside the bias correction, decoupled decay first; float32 math and moments for every param dtype",
        example=dict(lr=1e-2, weight_decay=0.1),  # beta2 = 0.999: rectified from step 6
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.5, 0.999)),
                   eps=Interval(1e-8, 1e-3), **_WD),
        variants=dict(late_rectified=dict(betas=(0.9, 0.7)),  # rectified from step 10
                      never_rectified=dict(betas=(0.9, 0.6)),  # rho_inf = 4
                      zero_betas=dict(betas=(0.0, 0.0)), no_decay=dict(weight_decay=0.0)),
        complex=False,
        complex_refused_here="RAdamLegacy: complex params are not supported (timm computes on `p.float()`, which "
                             "drops the imaginary part)",
        # float64 params step in float32 (timm's `p.float()`), whose sqrt is torch's CPU kernel: not correctly
        # rounded (about 0.7% of values an ulp off, measured), so a float32 ulp (1e-7 relative) can show in the
        # step; measured worst over the example and variants: 0 (float64), 3.4e-10 (float32, 20 steps)
        rtol32=1e-6,
        optax="optax.radam({lr})", optax_note="torch's RAdam", moved_per_param=7, slow=True,
        deviations=("bfloat16/float16 params: timm keeps exp_avg and exp_avg_sq in float32 (and loads them so); "
                    "here they are kept in the params' dtype, as every optimizer's buffers (the step itself is "
                    "float32, as timm's, and rounds the param once): the params stay within a few ulps of timm's "
                    "(tests/test_generic.py), the state differs by its bf16/f16 rounding. float64 params hold "
                    "timm's float32 moments exactly (exported as float32, `buffer_dtypes`).",
                    "Complex params are refused at init (TypeError, `complex_refused_here`); timm's `p.float()` "
                    "drops the imaginary part (with a warning) and writes the real result back.",),
    ),
    OptimizerInfo(
        "nvnovograd", "NvNovoGrad", "timm.optim.nvnovograd.NvNovoGrad",
        "NovoGrad: `g / (sqrt(v) + eps)` with `v` a float32 running average of `||g||^2` per param; `grad_averaging`, `amsgrad`, `decoupled_decay`, `corrected_weight_decay`",
        example=dict(lr=1e-2, weight_decay=0.01),
        full=dict(amsgrad=True),
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.0, 0.99), Interval(0.0, 0.999)),
                   eps=Interval(1e-8, 1e-3), **_WD),
        flags=dict(amsgrad=(False, True), grad_averaging=(False, True), decoupled_decay=(False, True)),
        variants=dict(amsgrad=dict(amsgrad=True, betas=(0.9, 0.5)), grad_averaging=dict(grad_averaging=True),
                      decoupled=dict(decoupled_decay=True, weight_decay=0.1),
                      corrected=dict(decoupled_decay=True, corrected_weight_decay=True, weight_decay=0.1),
                      no_decay=dict(weight_decay=0.0)),
        invalid=(_BAD_LR, _BAD_EPS, *_BAD_BETAS, dict(lr=0.0, corrected_weight_decay=True)),
        complex=False,
        complex_refused_here="NvNovoGrad: complex params are not supported (timm's exp_avg_sq, a real scalar, takes "
                             "the real part of sum(g**2) at the first step and raises at the second)",
        # the denominator is float32 (timm's 0-d exp_avg_sq) also for float64 params, and torch's CPU float32 sqrt
        # is not correctly rounded (about 0.7% of values an ulp off, measured): a float32 ulp (1e-7 relative) of
        # the normalised gradient shows in float64 results (measured 1.8e-8 after 20 steps; float32: 1.2e-7)
        rtol32=1e-6,
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}),
        optax="optax.novograd({lr})", optax_note="other moments (b2 on the norm, no first-step copy)",
        moved_per_param=5, slow=True,
        deviations=("Complex params are refused at init (TypeError, `complex_refused_here`); timm's float32 "
                    "exp_avg_sq takes the real part of the complex sum(g**2) at a first step (with a warning) and "
                    "raises RuntimeError at the second.",
                    "bfloat16/float16 params: timm rounds every intermediate tensor (g / d, the decayed update, "
                    "the momentum) to the params' dtype; here the step is computed in float32 and the momentum "
                    "rounded once (params within a few ulps, tests/test_generic.py).",),
    ),
    # -- timm: Lamb, Adan --
    OptimizerInfo(
        "lamb", "Lamb", "timm.optim.lamb.Lamb",
        "Adam's direction times the layer's trust ratio `||p|| / ||u||`; one gradient-norm clip over every group (`max_grad_norm`); `trust_clip`, `always_adapt`, decoupled or corrected decay, `caution`; group `step`",
        example=dict(lr=1e-2, weight_decay=0.1),
        # weight_decay first after lr: the class's two-group test gives group 1 its own decay
        # (and trust ratio) while one clip spans both groups
        valid=dict(lr=Interval(1e-4, 0.1), weight_decay=Interval(1e-4, 0.1, or_zero=True),
                   betas=(Interval(0.0, 0.99), Interval(0.5, 0.999)), eps=Interval(1e-8, 1e-3),
                   max_grad_norm=Interval(0.1, 10.0)),
        # caution: variants (complex params are refused with it)
        flags=dict(bias_correction=(True, False), grad_averaging=(True, False), trust_clip=(False, True),
                   always_adapt=(False, True), decoupled_decay=(False, True)),
        variants=dict(
            decoupled=dict(decoupled_decay=True), corrected=dict(decoupled_decay=True, corrected_weight_decay=True),
            trust_clip=dict(trust_clip=True), caution=dict(caution=True), no_decay=dict(weight_decay=0.0),
            always_adapt=dict(always_adapt=True, weight_decay=0.0), unclipped=dict(max_grad_norm=None),
            uncorrected=dict(bias_correction=False, grad_averaging=False, betas=(0.8, 0.99)),
        ),
        invalid=(_BAD_LR, _BAD_EPS, _BAD_WD, dict(lr=0.0, corrected_weight_decay=True)),
        complex_refused=(dict(caution=True),),  # caution's `u * g > 0` on complex tensors (timm views none as real)
        adapter=dict(snapshots={"max_lr_snapshot": "lr"}, cross_group={"max_grad_norm": _lamb_global_clip}),
        coupling=dict(max_grad_norm=None),
        layers_vectorised=False,  # vmapped over layers, an element rounds an ulp off its slice's (measured)
        optax="optax.lamb({lr}, weight_decay=0.01)", optax_note="no gradient clip; trust ratio always on",
        moved_per_param=7,
        slow=True,  # the default run is at its time budget: the full matrix runs under `-m slow`
        known_failures={f"two_groups-{dtype}-functional": (
            "the functional two-group run is a hand-made multi_transform of two lambs, each clipping its own "
            "group's gradients; timm clips every group with one norm (the class and `param_groups` do: "
            "`cross_group`; deviations)")
            for dtype in ("float64", "float32")},
        deviations=(
            "timm's one gradient clip spans every param group: so does `optax_like.optim.Lamb`, and so do "
            "`param_groups.partition` / `plan_transform` / `create_optimizer` (`cross_group_transform`, "
            "tests/param_groups/test_routing.py). A hand-made `multi_transform` of lambs clips each group by "
            "its own norm: for timm's numbers, clip the whole tree with `lamb_global_clip` first and build the "
            "groups with `max_grad_norm=None`.",
            "The live `param_groups[i]['step']` after a step is the group's int32 device scalar (no host sync); "
            "timm's is a 0-d float32 tensor. `state_dict()` has a Python float (no entry before the first step, "
            "as timm), which `optax_like.interop.torch` writes as timm's float32 tensor.",
        ),
    ),
    OptimizerInfo(
        "adan", "Adan", "timm.optim.adan.Adan",
        "Nesterov momentum from gradient differences: moments of `g`, `g_t - g_{t-1}` and `(g_t + beta2 (g_t - g_{t-1}))^2`; proximal (`no_prox=False`) or decoupled decay; `caution`; group `step`",
        example=dict(lr=1e-2, weight_decay=0.02),
        # beta3 >= 0.5: the second moment must not forget a gradient the first moment still holds
        # (as Adam's beta2, _ADAM_VALID)
        valid=dict(lr=Interval(1e-4, 0.1), weight_decay=Interval(1e-4, 0.1, or_zero=True),
                   betas=(Interval(0.0, 0.99), Interval(0.0, 0.99), Interval(0.5, 0.999)), eps=Interval(1e-8, 1e-3)),
        flags=dict(no_prox=(False, True)),  # caution: variants (complex params are refused with it)
        variants=dict(no_prox=dict(no_prox=True), caution=dict(caution=True), no_decay=dict(weight_decay=0.0),
                      caution_no_prox=dict(caution=True, no_prox=True, betas=(0.9, 0.8, 0.95))),
        # betas (a triple, checked index by index): tests/transforms/test_adan.py (the generic
        # checks take pairs)
        invalid=(_BAD_LR, _BAD_EPS),
        complex_refused=(dict(caution=True),),  # caution's `m * g > 0` on complex tensors (timm views none as real)
        layers_vectorised=False,  # vmapped over layers, an element rounds an ulp off its slice's (measured)
        optax="optax.adan({lr})", optax_note="eps_root inside the root; other decay form", moved_per_param=11,
        slow=True,  # the default run is at its time budget: the full matrix runs under `-m slow`
        deviations=(
            "The live `param_groups[i]['step']` after a step is the group's int32 device scalar (no host sync); "
            "timm's is a Python int, as `state_dict()` has it (no entry before the first step, as timm).",
            "timm's `restart_opt()` (zero moments, step 0) is not a method of `optax_like.optim.Adan`: start "
            "from a fresh functional state (`tx.init(params)`) or a new instance.",
        ),
    ),
    # -- timm: Adafactor, AdafactorBigVision --
    OptimizerInfo(
        "timm_adafactor", "TimmAdafactor", "timm.optim.adafactor.Adafactor",
        "fairseq's Adafactor (timm's factored dims): relative steps `min(1e-2, 1/sqrt(t)) * max(eps_scale, RMS(p))` with `lr=None`, update clipping, `betas` first moment; `caution`, `warmup_init`",
        # min_dim_size_to_factor=2: the small shapes factor (timm's leading dims (3, 4, 2), trailing (2, 3, 4))
        example=dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.999), min_dim_size_to_factor=2),
        valid=dict(lr=Interval(1e-4, 0.1), clip_threshold=Interval(0.5, 2.0), eps_scale=Interval(1e-4, 1e-2),
                   decay_rate=Interval(-1.0, -0.5), **_WD),
        flags=dict(caution=(False, True), scale_parameter=(True, False)),
        variants=dict(
            relative=dict(lr=None),  # timm's default: step sizes from the step and the param's RMS
            relative_unscaled=dict(lr=None, scale_parameter=False),
            relative_eps_scale=dict(lr=None, eps_scale=2.0),  # eps_scale > RMS: the Python float lr
            warmup=dict(lr=None, warmup_init=True), caution=dict(caution=True), no_momentum=dict(betas=None),
            clipped=dict(clip_threshold=0.3), unfactored=dict(min_dim_size_to_factor=16),
        ),
        # none: the reference checks only warmup_init (without lr), and takes any lr, a 3-element
        # tensor or None included (tests/transforms/test_timm_adafactor.py checks warmup_init)
        invalid=(),
        shapes=((4, 3), (5,), (3, 4, 2), (2, 3, 4), ()),
        complex=False,
        complex_refused_here="timm's Adafactor: complex params are not supported (timm applies its real-valued math "
                             "to complex tensors as they are)",
        adapter=dict(static=("min_dim_size_to_factor",), snapshots={
            "beta1": lambda args: None if args["betas"] is None else args["betas"][0],  # timm's group entries
            "relative_step": lambda args: args["lr"] is None}),
        optax="optax.adafactor({lr})", optax_note="optax's (T5's) defaults and factored dims", moved_per_param=7,
        slow=True,
        rewritten_group_entries={"lr": (
            "with relative steps timm writes each param's step size into its group's lr (the last param's: a "
            "tensor in the RMS's rounding); the class keeps the given lr (None), which the step does not read")},
        deviations=(
            "Complex params are refused at init (TypeError, `complex_refused_here`); timm steps them with its "
            "real-valued math applied to the complex tensors as they are.",
            "With relative steps (lr=None) timm writes the step size of the last param it updated into its "
            "group's `lr` (a 0-d tensor where it takes the param's RMS); the class keeps the group's lr as given.",
            "An empty param's `RMS` is 0 (timm's `norm / numel ** 0.5` is 0 / 0, nan).",
            "timm's groups read `beta1` (set from the constructor's `betas`) and ignore a group's own `betas`; "
            "here a group's `betas` gives its beta1 where `beta1` is None (a group of a constructor without betas).",
            "The state dict's `RMS` is a 0-d array of the param's compute dtype, as timm's tensor; `step` a Python int.",
        ),
    ),
    OptimizerInfo(
        "adafactor_big_vision", "AdafactorBigVision", "timm.optim.adafactor_bv.AdafactorBigVision",
        "big_vision's Adafactor: factored second moment over the two largest dims, `1 - t^-decay_rate` capped at `beta2_cap`, momentum in `momentum_dtype` (bfloat16); `clipping_threshold`, `unscaled_wd`, `caution`, `corrected_weight_decay`",
        # min_dim_size_to_factor=3: the small shapes factor ((4, 3): rows over dim 0; (3, 3): ties by index)
        example=dict(lr=1e-2, weight_decay=0.1, min_dim_size_to_factor=3),
        valid=dict(lr=Interval(1e-4, 0.1), decay_rate=Interval(0.5, 1.0), beta2_cap=Interval(0.9, 0.999),
                   momentum=Interval(0.0, 0.99), **_WD),
        flags=dict(caution=(False, True), unscaled_wd=(False, True)),
        variants=dict(
            float32_momentum=dict(momentum_dtype="float32"), no_momentum=dict(momentum=None),
            clipped=dict(clipping_threshold=0.5), caution=dict(caution=True),
            unscaled=dict(unscaled_wd=True, weight_decay=0.01), corrected=dict(corrected_weight_decay=True),
            unscaled_corrected=dict(unscaled_wd=True, corrected_weight_decay=True, weight_decay=0.01),
            capped=dict(decay_offset=3, beta2_cap=0.5),  # the cap binds from step 6
            unfactored=dict(min_dim_size_to_factor=16), eps=dict(eps=1e-3, momentum_dtype="float32"),
        ),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum_dtype="float64"), dict(lr=0.0, corrected_weight_decay=True)),
        shapes=((4, 3), (5,), (3, 4, 2), (3, 3), ()),
        complex=False,
        complex_refused_here="AdafactorBigVision: complex params are not supported (timm applies its real-valued "
                             "math to complex tensors as they are and casts the momentum to a real dtype)",
        adapter=dict(static=("min_dim_size_to_factor",), snapshots={"max_lr_snapshot": "lr"}),
        optax="optax.adafactor({lr})", optax_note="optax's (T5's) factoring and defaults", moved_per_param=6,
        slow=True,
        # a bfloat16 momentum entry one ulp (2**-8 of it) apart moves its param by lr * that: measured
        # 4.4e-4 of the leaf's scale (jit vs eager, hypothesis's example with ties)
        jit_rtol=1e-2,
        deviations=(
            "Complex params are refused at init (TypeError, `complex_refused_here`); timm steps them with its "
            "real-valued math as they are and casts the momentum to a real dtype (dropping the imaginary part).",
            "`momentum_dtype` defaults to `jnp.dtype('bfloat16')` (timm: torch.bfloat16, which is accepted, and which "
            "`to_torch_state_dict` writes); float64 is refused with timm's message for a name it does not know.",
        ),
    ),
    # -- timm: Muon --
    OptimizerInfo(
        "timm_muon", "TimmMuon", "timm.optim.muon.Muon",
        "Newton-Schulz (bfloat16; quintic, polar-express presets) on matrices and convolutions (`conv_mode` flatten/batched), AdamW/NAdamW fallback for the rest; `algo=\"adamuon\"`, `adjust_lr_fn`, `nesterov`",
        example=dict(lr=0.02, weight_decay=0.1),
        valid=dict(lr=Interval(1e-4, 0.02), momentum=Interval(0.0, 0.99), fallback_lr_scale=Interval(0.1, 2.0),
                   betas=(Interval(0.0, 0.99), Interval(0.5, 0.999)), **_WD),
        flags=dict(nesterov=(False, True), algo=("muon", "adamuon"), conv_mode=("flatten", "batched")),
        variants=dict(
            nesterov=dict(nesterov=True), batched=dict(conv_mode="batched"),
            batched_unnormalised=dict(conv_mode="batched", normalize_spatial=False),
            original=dict(ns_coefficients="original", adjust_lr_fn="original"),
            rms_to_rms=dict(adjust_lr_fn="rms_to_rms"), unadjusted=dict(adjust_lr_fn=None),
            polar_express=dict(ns_coefficients="polar_express", safety_factor=1.01, ns_steps=6),
            scale_eps=dict(scale_eps=True), fallback_scale=dict(fallback_lr_scale=0.3),
            adamuon=dict(algo="adamuon"), nadamuon=dict(algo="adamuon", nesterov=True),
            adamuon_rms_to_rms=dict(algo="adamuon", adjust_lr_fn="rms_to_rms"),
            adamuon_batched=dict(algo="adamuon", conv_mode="batched"),
        ),
        invalid=(_BAD_LR, _BAD_WD, _BAD_EPS, dict(momentum=1.0), dict(momentum=-0.1), dict(conv_mode="conv"),
                 dict(algo="sgd")),
        # (8, 6) and (6, 4, 2, 2) (flattened (6, 16), batched (4, 6, 4)) take Muon; (5,), (4, 3) (a side
        # below 4) and () timm's AdamW fallback
        shapes=((8, 6), (6, 4, 2, 2), (5,), (4, 3), ()),
        complex=False,
        complex_refused_here=("timm's Muon: complex params are not supported (timm casts a complex matrix to "
                              "bfloat16 for Newton-Schulz, dropping the imaginary part)"),
        # bf16 Newton-Schulz on both sides: measured <= 1.1e-16 (float64) and 7.7e-8 (float32) relative in every
        # configuration here but "original" (1.8e-5, a bfloat16 entry of O flipped by the gemm's accumulation order)
        rtol32=1e-3,
        adapter=dict(static=("ns_steps",), group_flags=("use_fallback", "use_muon")),
        optax="optax.contrib.muon({lr})", optax_note="other routing and algorithm details", moved_per_param=5,
        slow=True,
        deviations=(
            "Newton-Schulz runs in bfloat16 as timm's: matmul accumulation order (XLA vs torch's CPU gemm) can "
            "flip the last bit of a bfloat16 entry of the orthogonalised update (`rtol32`).",
            "A param's route (Muon or the AdamW fallback: timm's group flags `use_fallback` / `use_muon`, else "
            "the shape) is fixed when its state is made (timm: at its first step): a group flag edited after "
            "that raises at the next step, and a loaded `use_muon` must equal the route.",
            "Complex params are refused at init (TypeError, `complex_refused_here`); timm casts a complex Muon "
            "param's momentum to bfloat16 (dropping the imaginary part) and runs its fallback on real views.",
            "Bad `ns_coefficients` raise timm's errors at construction (timm: at the first step).",
        ),
    ),
    OptimizerInfo(
        "kron", "Kron", "timm.optim.kron.Kron",
        "PSGD Kron: momentum preconditioned by Kronecker factors (triangular or diagonal per dim, `memory_save_mode`) fitted to random probes at `preconditioner_update_probability`; RMS capped at 1.1; coupled, decoupled (`corrected_weight_decay`) or stochastic decay; `flatten`; seeded draws (`kron_draws`)",
        example=dict(lr=1e-2, weight_decay=1e-2),
        valid=dict(lr=Interval(1e-4, 0.1), momentum=Interval(0.0, 0.99), precond_lr=Interval(1e-3, 0.5), **_WD),
        flags=dict(decoupled_decay=(False, True), momentum_into_precond_update=(True, False)),
        variants=dict(
            decoupled=dict(decoupled_decay=True, weight_decay=0.1),
            corrected=dict(decoupled_decay=True, corrected_weight_decay=True, weight_decay=0.1),
            stochastic=dict(stochastic_weight_decay=True, weight_decay=0.1),
            stochastic_decoupled=dict(stochastic_weight_decay=True, decoupled_decay=True, weight_decay=0.1),
            gradient_probe=dict(momentum_into_precond_update=False),
            one_diag=dict(memory_save_mode="one_diag"), smart_one_diag=dict(memory_save_mode="smart_one_diag"),
            all_diag=dict(memory_save_mode="all_diag"),
            small_triangular=dict(max_size_triangular=3, min_ndim_triangular=1),  # (5,) diagonal, (4, 3)'s 4 too
            flatten=dict(flatten=True, flatten_start_dim=0),  # (4, 3) -> (12,), (2, 3, 2) -> (12,)
            every_third=dict(preconditioner_update_probability=0.34),  # updates at counter >= 2.94: every 3rd step
            scaled=dict(precond_init_scale=2.0, precond_lr=0.3),
        ),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum=1.0), dict(momentum=-0.1)),
        shapes=((4, 3), (5,), (2, 3, 2), ()),
        complex=False,  # timm: NotImplementedError at its first step (its RMS cap's clamp); here at init
        # precond_init_scale: Q's initial value; param_group: each group's own draws (timm: one stream)
        adapter=dict(static=("precond_init_scale",), snapshots={"max_lr_snapshot": "lr"}, group_index="param_group"),
        draws="optax_like.transforms.kron.drive_reference",
        # each layer of a stacked leaf is a param of the unstacked model, with its own draws (its index and
        # group's); vmapped over layers they would all draw the first layer's: run slice by slice
        layers_vectorised=False,
        # the preconditioner's fit (matmuls, triangular solves) amplifies the accumulation order of
        # torch's MKL kernels, chosen per CPU: float64 within 1e-10 on the Intel hosts of earlier
        # runs, up to 1.1e-9 relative (a loaded Q after 4 steps) on an AMD EPYC host
        rtol64=1e-8,
        optax=None, moved_per_param=6, extra_functions=("kron_with_seed",),
        compute_bound="triangular solves and matmuls on each dim's factor (up to 2048 x 2048) at every "
                      "preconditioner update: minutes per step on ResNet-50's shapes on 2 cpus",
        slow=True,
        deviations=(
            "Random numbers: timm draws from Python's `random.Random(1337)` (balance, stochastic decay) and torch's "
            "global generator (probes); here from `kron_draws(seed, leaf index, step, ..., group)` (JAX's PRNG, `seed` "
            "default 1337): other values, reproducible per param and resumable from a state dict. The parity "
            "suites make timm draw ours (`draws`: `transforms.kron.drive_reference`).",
            "timm's `state_dict()['rng_state']` (its Python generator) is not written and is ignored on load: the "
            "draws follow from the seed and each param's loaded step.",
            "`deterministic` is accepted and ignored (the draws are always deterministic).",
            "The parity suites run timm's plain helpers in place of its `torch.compile`d ones (same math; "
            "inductor compiles each shape for seconds).",
            "Complex params are refused at init with timm's error (timm: at its first step, from its RMS cap's "
            "`clamp`, after a float32 triangular solve that drops their imaginary part).",
        ),
    ),
    _torchao_adam("adam8bit", "Adam8bit", "8-bit dynamic-map moments in blocks of 256; coupled decay"),
    _torchao_adam("adamw8bit", "AdamW8bit", "8-bit dynamic-map moments in blocks of 256; decoupled decay"),
    _torchao_adam("adam4bit", "Adam4bit", "4-bit moments (two codes a byte) in blocks of 128; coupled decay"),
    _torchao_adam("adamw4bit", "AdamW4bit", "4-bit moments (two codes a byte) in blocks of 128; decoupled decay"),
    _torchao_adam("adam_fp8", "AdamFp8", "float8_e4m3fn moments in blocks of 256; coupled decay"),
    _torchao_adam("adamw_fp8", "AdamWFp8", "float8_e4m3fn moments in blocks of 256; decoupled decay"),
    OptimizerInfo(
        "schedule_free_adamw", "AdamWScheduleFree", "schedulefree.AdamWScheduleFree",
        "Schedule-Free AdamW: steps at y, evaluates at x (the class's `train()`/`eval()`); linear `warmup_steps`, weights `(k+1)^r lr_max^weight_lr_power`; `k`, `weight_sum`, `lr_max` in `param_groups`",
        example=dict(lr=0.01, warmup_steps=5, r=0.5, weight_decay=0.01),
        # eps >= 1e-6: schedulefree rounds every step of `sqrt(v / bc2) + eps` to a float16 param's
        # dtype, where eps < 6e-8 vanishes (0 / 0 at a zero gradient) and g / eps overflows for a
        # gradient whose v underflows (|g| < 8e-3 at beta2 = 0.999) unless eps >= 1.2e-7.
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.5, 0.99), Interval(0.5, 0.999)),
                   eps=Interval(1e-6, 1e-3), warmup_steps=Interval(1.0, 10.0, or_zero=True), **_WD),
        variants=dict(unweighted=dict(weight_lr_power=0.0, r=0.0, warmup_steps=0, weight_decay=0.1, betas=(0.8, 0.99))),
        optax="optax.contrib.schedule_free_adamw({lr})", moved_per_param=7,
        extra_functions=("schedule_free_eval_params", "schedule_free_train_params", "schedule_free_wrapper",
                         "recalibrate_batch_stats"),
        **_SCHEDULE_FREE,
    ),
    OptimizerInfo(
        "schedule_free_sgd", "SGDScheduleFree", "schedulefree.SGDScheduleFree",
        "Schedule-Free SGD: AdamW's recursion without the second moment, `momentum` as beta1",
        example=dict(lr=0.1, momentum=0.9, warmup_steps=3, r=1.0, weight_decay=1e-3),
        full=dict(warmup_steps=3),  # a changing lr: weight_lr_power matters
        valid=dict(lr=Interval(1e-4, 1.0), momentum=Interval(0.1, 0.99), warmup_steps=Interval(1.0, 10.0, or_zero=True), **_WD),
        invalid=(_BAD_LR, _BAD_WD, dict(momentum=0.0), dict(momentum=1.0)),
        optax="optax.contrib.schedule_free_sgd({lr})", moved_per_param=5, **_SCHEDULE_FREE,
    ),
    OptimizerInfo(
        "schedule_free_radam", "RAdamScheduleFree", "schedulefree.RAdamScheduleFree",
        "Schedule-Free RAdam: RAdam's rectification as the warmup; `silent_sgd_phase` (no step while `rho_t <= 4`)",
        example=dict(lr=0.01, r=0.5, weight_decay=0.01),  # rho_t > 4 from step 6: both phases in 20 steps
        full=dict(silent_sgd_phase=False),  # steps from the first step
        valid=dict(lr=Interval(1e-4, 0.1), betas=(Interval(0.5, 0.99), Interval(0.5, 0.999)),
                   eps=Interval(1e-6, 1e-3), **_WD),  # eps: see schedule_free_adamw
        flags=dict(silent_sgd_phase=(True, False)),
        variants=dict(sgd_phase=dict(silent_sgd_phase=False)),
        optax=None, moved_per_param=7, **_SCHEDULE_FREE,
    ),
]

OPTIMIZERS: Mapping[str, OptimizerInfo] = _frozen({info.name: info for info in _RECORDS})


def by_class(cls_name: str) -> OptimizerInfo:
    """The record whose adapter class is `optax_like.optim.<cls_name>`."""
    for info in OPTIMIZERS.values():
        if info.cls == cls_name:
            return info
    raise KeyError(cls_name)


def markdown_table() -> str:
    """The README's optimizer table, generated from the records (tests/test_registry.py checks
    that README.md contains it)."""
    rows = ["| reference | functional (`optax_like.`) | stateful (`optax_like.optim.`) | notes |",
            "|---|---|---|---|"]
    for info in OPTIMIZERS.values():
        functional = f"`{info.name}`" + "".join(f" (+ `{f}`)" for f in info.extra_functions)
        rows.append(f"| `{info.reference}` | {functional} | `{info.cls}` | {info.summary} |")
    return "\n".join(rows)
