"""Runs optax 0.2.8's own test files against optax_like.

The test files in `optax_tests/` are optax's, unchanged (see its README). `load(path, namespace)`
executes one of them in a pytest module's namespace with an `__import__` that answers every
`optax...` import with a shim module. A shim module resolves each name the tests use through
`NAMES` below, one of:

- an optax_like object, or an adapter with optax's signature that calls one (`alias.adam(b1,
  b2)` -> `optax_like.adam(betas=(b1, b2))`): the subject under test;
- `OPTAX`: optax's own object, for what a test only builds its case from (`test_utils`'s
  assertions, `optax.tree`, type aliases, a class a test subclasses). `optax.tree.map_params`
  stays optax's on purpose: the tests check that optax's utility reads optax_like's states;
- `INPUT`: optax's own schedule where a test only feeds it to the subject (a `count -> value`
  function for `inject_hyperparams`), not shared where the schedules themselves are tested;
- anything else is not shared: optax_like has no counterpart (`centralize`, `add_noise`,
  `ema`, ...). Using it skips the test (`unittest.SkipTest`), naming it.

`DIFFERENCES` lists the tests that fail on purpose (torch semantics); conftest.py marks them
`xfail(strict=True)` with the reason (docs/porting.md lists them too). `NOT_SHARED_TESTS` lists
tests whose subject is not shared although every name they touch is (skipped with the reason),
`SLOW` the tests that run only with `-m slow`.
"""

import builtins
import dataclasses
import pathlib
import types
import unittest
from typing import Any

import jax.numpy as jnp

import optax_like as ol
from optax_like import schedules as ols
from optax_like.core import base as ol_base
from optax_like.transforms import accumulation as ol_accumulation
from optax_like.transforms import combine as ol_combine

HERE = pathlib.Path(__file__).resolve().parent
TESTS = HERE / "optax_tests"
OPTAX_VERSION = "0.2.8"

# --------------------------------------------------------------------------------------------
# Deliberate differences: optax's expectation is not torch's. Keyed by
# "<file under optax_tests>::<TestCase>::<test method>".
DIFFERENCES = {
    "transforms/_clipping_test.py::ClippingTest::test_clip_by_global_norm":
        "torch's clip_grad_norm_ scales by max_norm / (total_norm + 1e-6): a norm already at "
        "max_norm is scaled once more, by ~1e-6 relative (optax: exactly max_norm / total_norm)",
    "schedules/_inject_test.py::InjectHyperparamsTest::test_hyperparam_default_dtype_bf16":
        "hyperparameters are float32 (float64 under x64) whatever the params' dtype, as torch "
        "keeps them as Python floats; optax rounds them to the params' dtype (bfloat16)",
    **{f"{path}::ExtraArgsTest::{name}":
       "params must be float or complex arrays (torch optimizes Tensors only): init refuses "
       "the Python ints these tests use as params, naming the leaf"
       for path in ("_src/combine_test.py", "transforms/_combining_test.py")
       for name in ("test_extra_args", "test_extra_args_positional_params")},
    "transforms/_masking_test.py::MaskedTest::test_masked_state_structure":
        "the state is torch's: SGD with momentum=0 keeps no momentum buffer, and the buffer is "
        "torch's state key `momentum_buffer` (optax: a zero-decay `trace` field)",
    "schedules/_schedule_test.py::CosineDecayTest::test_decay_count_greater_count":
        "torch's CosineAnnealingLR keeps following the cosine past T_max (back up to lr at "
        "2 T_max); optax's cosine_decay_schedule stays at the floor",
    "schedules/_schedule_test.py::CosineDecayTest::test_decay_count_greater_count_with_alpha":
        "torch's CosineAnnealingLR keeps following the cosine past T_max (back up to lr at "
        "2 T_max); optax's cosine_decay_schedule stays at the floor",
    "schedules/_schedule_test.py::OneCycleTest::test_cosine":
        "torch's OneCycleLR peaks at step pct_start * total_steps - 1 and ends at total_steps "
        "- 1 (optax: at pct_start * total_steps and total_steps), and has no value past total_steps",
}

# Run with `-m slow` only (the default run stays cheap): unjitted steps over 9 dtype pairs.
SLOW = {
    "transforms/_accumulation_test.py::AccumulationTest::test_multi_steps_mixed_precision0",
}

# Tests whose subject optax_like does not share although every name they use maps.
NOT_SHARED_TESTS = {
    "schedules/_inject_test.py::StatefulTest::test_inject_stateful_hyperparams":
        "stateful schedules (optax's base.StatefulSchedule, InjectStatefulHyperparamsState) are optax's only",
}


# --------------------------------------------------------------------------------------------
# Names.
class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


OPTAX = _Marker("OPTAX")  # optax's own object (a test's building material, not its subject)
INPUT = _Marker("INPUT")  # optax's own schedule as an input; not shared where schedules are tested


def not_shared(what: str):
    raise unittest.SkipTest(f"not shared: optax_like has no {what}")


class NotShared:
    """What a shim module gives for a name optax_like does not share: using it skips the test."""

    def __init__(self, qualname: str):
        self._qualname = qualname

    def _skip(self, *args, **kwargs):
        not_shared(self._qualname)

    __call__ = _skip

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        not_shared(self._qualname)

    @property
    def __signature__(self):
        not_shared(self._qualname)

    def __repr__(self):
        return f"<not shared: {self._qualname}>"


class _NoneMeta(type):
    def __instancecheck__(cls, instance):
        return instance is None

    def __call__(cls, *args, **kwargs):
        return None


class MaskedNode(metaclass=_NoneMeta):
    """optax marks a masked-out leaf with `MaskedNode()`; optax_like with `None` (a leaf the
    inner transformation does not see). `MaskedNode()` is None, `isinstance(None, MaskedNode)`."""


# Adapters: optax's signature (names, defaults; what `inject_hyperparams` reads), optax_like's
# object. An argument optax_like has no counterpart for skips the test when it is given.
def _sgd(learning_rate: ol_base.ScalarOrSchedule, momentum=None, nesterov=False, accumulator_dtype=None):
    if accumulator_dtype is not None:
        not_shared("sgd(accumulator_dtype=...)")
    return ol.sgd(learning_rate, momentum=0.0 if momentum is None else momentum, nesterov=nesterov)


def _adam(learning_rate: ol_base.ScalarOrSchedule = 0.001, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0,
          mu_dtype=None, *, nesterov=False):
    if mu_dtype is not None or nesterov or eps_root != 0.0:
        not_shared("adam(mu_dtype=..., nesterov=..., eps_root=...) (scale_by_adam has eps_root)")
    return ol.adam(learning_rate, betas=(b1, b2), eps=eps)


def _trace(decay, nesterov=False, accumulator_dtype=None):
    if accumulator_dtype is not None:
        not_shared("trace(accumulator_dtype=...)")
    return ol.trace(decay, nesterov=nesterov)


def _scale_by_lion(b1=0.9, b2=0.99, mu_dtype=None, *, mode="hard", smooth_beta=1.0):
    if mu_dtype is not None or mode != "hard" or smooth_beta != 1.0:
        not_shared("scale_by_lion(mu_dtype=..., mode=..., smooth_beta=...)")
    return ol.scale_by_lion(b1, b2)


_sgd.__name__, _adam.__name__, _trace.__name__, _scale_by_lion.__name__ = "sgd", "adam", "trace", "scale_by_lion"


# optax's schedules as torch's lr_scheduler functions, where the parameters translate.
def constant_schedule(value):
    return ols.lambda_lr(value, lambda count: 1.0)


def cosine_decay_schedule(init_value, decay_steps, alpha=0.0, exponent=1.0):
    if exponent != 1.0 or decay_steps <= 0:
        not_shared("cosine schedule with an exponent or without steps (CosineAnnealingLR)")
    return ols.cosine_annealing_lr(init_value, T_max=decay_steps, eta_min=alpha * init_value)


def exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0, staircase=False,
                      end_value=None):
    if transition_steps <= 0 or decay_rate == 0 or transition_begin != 0 or end_value is not None:
        not_shared("exponential decay with a delayed begin, an end value or a constant fallback "
                   "(ExponentialLR, StepLR)")
    if staircase:
        return ols.step_lr(init_value, step_size=transition_steps, gamma=decay_rate)
    return ols.exponential_lr(init_value, gamma=decay_rate ** (1.0 / transition_steps))


def polynomial_schedule(init_value, end_value, power, transition_steps, transition_begin=0):
    if end_value != 0 or transition_begin != 0 or transition_steps <= 0:
        not_shared("polynomial schedule to a non-zero end value or with a delayed begin (PolynomialLR)")
    return ols.polynomial_lr(init_value, total_iters=transition_steps, power=power)


def piecewise_constant_schedule(init_value, boundaries_and_scales=None):
    scales = set((boundaries_and_scales or {}).values())
    if len(scales) != 1:
        not_shared("piecewise constant schedule with different scales (MultiStepLR has one gamma)")
    return ols.multi_step_lr(init_value, sorted(boundaries_and_scales), gamma=scales.pop())


def cosine_onecycle_schedule(transition_steps, peak_value, pct_start=0.3, div_factor=25.0,
                             final_div_factor=1e4):
    return ols.one_cycle_lr(peak_value, total_steps=transition_steps, pct_start=pct_start,
                            anneal_strategy="cos", div_factor=div_factor,
                            final_div_factor=final_div_factor, three_phase=False)


_SCHEDULES = {
    "constant_schedule": constant_schedule,
    "cosine_decay_schedule": cosine_decay_schedule,
    "exponential_decay": exponential_decay,
    "polynomial_schedule": polynomial_schedule,
    "piecewise_constant_schedule": piecewise_constant_schedule,
    "cosine_onecycle_schedule": cosine_onecycle_schedule,
}

NAMES: dict[str, Any] = {
    # base
    "GradientTransformation": ol.GradientTransformation,
    "GradientTransformationExtraArgs": ol.GradientTransformationExtraArgs,
    "EmptyState": ol.EmptyState,
    "with_extra_args_support": ol.with_extra_args_support,
    "stateless": ol.stateless,
    "identity": ol.identity,
    "TransformUpdateFn": ol_base.TransformUpdateFn,
    "TransformInitFn": ol_base.TransformInitFn,
    "Params": ol.Params,
    "Updates": ol.Updates,
    "OptState": ol.OptState,
    "Schedule": ol.Schedule,
    "ScalarOrSchedule": ol.ScalarOrSchedule,
    "PRNGKey": OPTAX,
    "StatefulSchedule": OPTAX,  # a class the inject test subclasses (that test is not shared)
    "init_empty_state": OPTAX,  # a one-line init a test builds its transformation from
    # update
    "apply_updates": ol.apply_updates,
    # alias
    "sgd": _sgd,
    "adam": _adam,
    # combine / _combining / wrappers / _masking
    "chain": ol.chain,
    "named_chain": ol.named_chain,
    "partition": ol.multi_transform,
    "multi_transform": ol.multi_transform,
    "masked": ol.masked,
    "MaskedState": ol.MaskedState,
    "MaskedNode": MaskedNode,
    "_mask_callable": ol_combine.is_mask_fn,
    # transform / _accumulation / _adding / _clipping / _conditionality
    "scale": ol.scale,
    "trace": _trace,
    "scale_by_adam": ol.scale_by_adam,
    "scale_by_adamax": ol.scale_by_adamax,
    "scale_by_adadelta": ol.scale_by_adadelta,
    "scale_by_lion": _scale_by_lion,
    "ScaleByLionState": ol.ScaleByLionState,
    "add_decayed_weights": ol.add_decayed_weights,
    "clip": ol.clip,
    "clip_by_global_norm": ol.clip_by_global_norm,
    "apply_if_finite": ol.apply_if_finite,
    "MultiSteps": ol.MultiSteps,
    "MultiStepsState": ol.MultiStepsState,
    "skip_not_finite": ol_accumulation.skip_not_finite,
    "skip_large_updates": ol_accumulation.skip_large_updates,
    # schedules
    "inject_hyperparams": ol.inject_hyperparams,
    "InjectHyperparamsState": ol.InjectHyperparamsState,
    "linear_schedule": INPUT,
    **{name: INPUT for name in _SCHEDULES},
}

# optax modules the tests import whole: optax's own (assertions, tree utilities), or a stub.
OPTAX_MODULES = {"optax._src.test_utils", "optax.tree", "optax.tree_utils"}


def _alias_test_stub():
    """`alias_test` (imported by the schedule tests for its optimizer list and parabola) needs
    scikit-learn; the stub holds its entries for the optimizers optax_like shares, and its
    `_setup_parabola`, verbatim."""
    from optax._src import numerics

    def _setup_parabola(dtype):
        """Quadratic function as an optimization target."""
        initial_params = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
        final_params = jnp.array([1.0, -1.0, 1.0], dtype=dtype)

        if jnp.iscomplexobj(dtype):
            final_params *= 1 + 1j

        def objective(params):
            return jnp.sum(numerics.abs_sq(params - final_params))

        return initial_params, final_params, objective

    stub = types.ModuleType("optax._src.alias_test")
    stub._OPTIMIZERS_UNDER_TEST = (  # type: ignore[attr-defined]
        {"opt_name": "adam", "opt_kwargs": {"learning_rate": 1e-1}},
        {"opt_name": "sgd", "opt_kwargs": {"learning_rate": 1e-3, "momentum": 0.9}},
    )
    stub._setup_parabola = _setup_parabola  # type: ignore[attr-defined]
    return stub


@dataclasses.dataclass
class _Shim:
    schedules_are_subject: bool
    modules: dict = dataclasses.field(default_factory=dict)

    def module(self, name: str):
        if name in OPTAX_MODULES:
            import importlib

            return importlib.import_module(name)
        if name == "optax._src.alias_test":
            return _alias_test_stub()
        if name not in self.modules:
            self.modules[name] = _ShimModule(name, self)
        return self.modules[name]

    def resolve(self, module: str, attr: str):
        value = NAMES.get(attr, None)
        if value is INPUT:
            if self.schedules_are_subject:
                value = _SCHEDULES.get(attr)
            else:
                value = OPTAX
        if value is OPTAX:
            return _optax_object(module, attr)
        if value is None:
            return NotShared(f"{module.replace('optax._src', 'optax')}.{attr}")
        return value

    def importer(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == "optax" or name.startswith("optax.")):
            if fromlist:
                return self.module(name)
            for i, part in enumerate(name.split(".")):  # `import optax.tree`: bind the package
                self.module(".".join(name.split(".")[: i + 1]))
            return self.module("optax")
        return builtins.__import__(name, globals, locals, fromlist, level)


_SUBMODULES = {
    "optax": {"_src", "transforms", "schedules", "tree", "tree_utils"},
    "optax._src": {"alias", "alias_test", "base", "combine", "test_utils", "transform", "update",
                   "wrappers", "numerics"},
    "optax.transforms": {"_accumulation", "_adding", "_clipping", "_combining", "_conditionality",
                         "_constraining", "_masking"},
    "optax.schedules": {"_schedule", "_inject"},
}


class _ShimModule(types.ModuleType):
    def __init__(self, name: str, shim: _Shim):
        super().__init__(name)
        self._shim = shim

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in _SUBMODULES.get(self.__name__, ()):
            return self._shim.module(f"{self.__name__}.{attr}")
        return self._shim.resolve(self.__name__, attr)


def _optax_object(module: str, attr: str):
    import importlib

    mod = importlib.import_module(module)
    if hasattr(mod, attr):
        return getattr(mod, attr)
    import optax

    return getattr(optax, attr)


def load(relpath: str, namespace: dict) -> None:
    """Executes optax's test file `optax_tests/<relpath>` in `namespace` (a pytest module's
    globals), its optax imports answered by the shim."""
    import optax

    if optax.__version__ != OPTAX_VERSION:
        raise RuntimeError(f"tests/optax_compat runs optax {OPTAX_VERSION}'s tests with its test utilities; "
                           f"optax {optax.__version__} is installed (pip install optax=={OPTAX_VERSION}).")
    path = TESTS / relpath
    shim = _Shim(schedules_are_subject=relpath.startswith("schedules/_schedule"))
    patched = dict(vars(builtins))
    patched["__import__"] = shim.importer
    namespace["__builtins__"] = patched
    namespace["OPTAX_TEST_FILE"] = relpath
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)


def test_id(relpath: str, cls: str, method: str) -> str:
    return f"{relpath}::{cls}::{method}"

