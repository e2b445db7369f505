"""Validation sweep (issues #9 and #3): bad arguments fail as torch 2.13 fails, or clearer.

For every optimizer of the registry (optax_like/registry.py), the functional factory
(`optax_like.adam(...)`) and the adapter class (`optax_like.optim.Adam(params, ...)`) are built
with the same bad arguments as the reference's class (torch's, or timm's: Lion, ADOPT); the
exception type and message must be the reference's, exactly. Cases:

1. torch's database: every record of `optim_error_inputs_func(device="cpu")` of every
   `OptimizerInfo` in torch/testing/_internal/common_optimizers.py's `optim_db` (including the
   generic records of `get_error_inputs_for_all_optims`), read at collection: torch must fail as
   the record says (type and regex), and both views as torch does (type and exact message; a
   record's step errors may be raised at `init`/the first update). Records without an analogue
   in the factory view (duplicates, named params, param groups) and the deliberate differences
   are listed in `FACTORY_NOT_APPLICABLE` / `DELIBERATE` with their reason. `CONSTRUCTOR_CHECKS`:
   each record's `invalid` argument sets (the other checks of the reference's `__init__`), as
   given and with every float a 0-d array (torch's Tensor hyperparameters).
2. Wrong argument types: where torch raises an anonymous TypeError (`'<' not supported between
   instances of 'str' and 'float'`) ours is a TypeError that names the argument (each argument a
   record's `invalid` shows the reference checks; pairs too short or too long).
3. Schedulers: `optax_like.optim.lr_scheduler` classes against torch's, and the functional
   factories of `optax_like.schedules` with the same arguments.
4. Structure mismatches between grads and params: an error naming the leaf path, at trace time
   (eager and under jit), and the adapter's state untouched after the error.

What a jax.Array hyperparameter means (torch's Tensor lr/betas): a real 0-d array, a value that
can change without retracing (`inject_hyperparams`, the adapter). See core/validation.py.

Deliberate differences (each has a test below that pins it):
- A one-element array of rank >= 1 (torch squeezes it): the adapter squeezes it as torch does;
  the functional factories reject it with a ValueError naming the argument, because it would
  broadcast every update to its rank.
(Adam/AdamW's kernel rules `lr as a Tensor is not supported for capturable=False and
foreach=True`, and betas[i], are torch's in both views: the same arguments fail the same way.)
- A two-element Tensor beta: torch's range check fails with `Boolean value of Tensor with more
  than one value is ambiguous` (RuntimeError); ours raises `Tensor betas[0] must be 1-element`
  (ValueError, torch's message for the check it makes after the range check).
- A bare array as params: TypeError with torch's opening words; the end of the message
  differs (a pytree or a list of group dicts, not an iterable of Tensors).
- Checks torch makes at `step()` (Muon's `ns_steps`, coefficient count) are made by the factory.
- Named params (torch >= 2.5: `[("weight", p), ...]`) and the duplicate-param warning/error are
  the adapter's (records of the database); a factory's param names are its pytree key paths.
"""

from __future__ import annotations

import inspect
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import optim, registry
from optax_like.core import validation as v
from optax_like.transforms.sparse_adam import RowSparseGrad
from jax.experimental import sparse as jsparse


class A:
    """An array argument: `torch.tensor(value)` on torch's side, `jnp.asarray(value)` on ours."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"A({self.value!r})"


def _torch_side(x):
    if isinstance(x, A):
        return torch.tensor(x.value, dtype=torch.float32)
    if isinstance(x, tuple):
        return tuple(_torch_side(y) for y in x)
    if isinstance(x, dict):
        return {k: _torch_side(y) for k, y in x.items()}
    return x


def _our_side(x):
    if isinstance(x, A):
        return jnp.asarray(x.value, jnp.float32)
    if isinstance(x, tuple):
        return tuple(_our_side(y) for y in x)
    if isinstance(x, dict):
        return {k: _our_side(y) for k, y in x.items()}
    return x


RECORDS = registry.OPTIMIZERS  # name -> factory, adapter class, reference class, `invalid`, ...
ALL = list(RECORDS)


def _torch_params():
    return [torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float32))]


def _our_params():
    return [jnp.ones((2, 2), jnp.float32)]  # 2-D: Muon's requirement


def _catch(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the exception is the result under test
            return e
    return None


def reference_error(name, kwargs):
    # new_reference: an argument the reference requires (timm's SGDP lr) takes the record's example value
    return _catch(lambda: RECORDS[name].new_reference(_torch_params(), **_torch_side(kwargs)))


def factory_error(name, kwargs):
    return _catch(lambda: RECORDS[name].factory(**_our_side(kwargs)))


def adapter_error(name, kwargs):
    return _catch(lambda: RECORDS[name].adapter_class()(_our_params(), **_our_side(kwargs)))


def assert_same_error(ours, theirs, where):
    assert theirs is not None, "the reference accepted the case: the table is wrong"
    assert ours is not None, f"{where} accepted what the reference rejects with {theirs!r}"
    assert type(ours) is type(theirs), f"{where}: {ours!r} vs the reference's {theirs!r}"
    assert str(ours) == str(theirs), f"{where}: {str(ours)!r} vs the reference's {str(theirs)!r}"


# ---------------------------------------------------------------------------------------------
# 1. torch's error table and constructor checks
# ---------------------------------------------------------------------------------------------

# torch's records: `optim_error_inputs_func(device="cpu", dtype=float32)` of every OptimizerInfo
# in torch/testing/_internal/common_optimizers.py's `optim_db` (the generic records of
# `get_error_inputs_for_all_optims` included). One case per record: (torch class name, index).
common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers", reason="needs expecttest (the `test` extra)"
)
DB = {info.optim_cls.__name__: info for info in common_optimizers.optim_db}
# torch class name -> the record whose reference it is.
_RECORD_OF = {info.reference_class().__name__: info for info in RECORDS.values() if info.reference_package == "torch"}


def error_records(cls_name):
    return DB[cls_name].optim_error_inputs_func(device="cpu", dtype=torch.float32)


ERROR_CASES = [(cls_name, i) for cls_name in DB for i in range(len(error_records(cls_name)))]

# Records without a JAX analogue in one of the two views, by description: view -> reason. The
# view that has an analogue is still checked (see test_torch_error_inputs).
FACTORY_NOT_APPLICABLE = {
    "invalid param type": "a factory takes no params; a bare array is a valid pytree for `init`",
    "a param group cannot have duplicate parameters": (
        "a factory sees a pytree, whose leaves are values: the same array in two leaves is two "
        "params (the adapter warns as torch)"),
    "duplicate parameters should not occur across param groups either": "a factory has no param groups",
    "all optimizer params should be with/without names": "a factory's param names are its key paths",
    "all optimizer param groups should be with/without names.": "a factory has no param groups",
    "dense params required in param_groups": "a factory has no param groups (`init` refuses the sparse leaf)",
}
# Records where both views differ from torch on purpose (each pinned by the test below).
DELIBERATE = {
    "invalid param type": (
        "the adapter raises torch's TypeError with torch's opening words; the end of the message "
        "names what is accepted here (a pytree of arrays or a list of group dicts)"),
}


def _to_ours(x, seen):
    """torch's record values -> ours: a Parameter -> one jnp array per torch object (a repeated
    Parameter stays one object), a sparse tensor -> an empty BCOO, a Tensor -> an array."""
    if isinstance(x, torch.Tensor):
        if id(x) not in seen:
            if x.is_sparse:
                seen[id(x)] = jsparse.BCOO((jnp.zeros((0,), jnp.float32), jnp.zeros((0, x.sparse_dim()), jnp.int32)),
                                           shape=tuple(x.shape))
            else:
                seen[id(x)] = jnp.asarray(x.detach().numpy())
        return seen[id(x)]
    if isinstance(x, tuple):
        return tuple(_to_ours(y, seen) for y in x)
    if isinstance(x, list):
        return [_to_ours(y, seen) for y in x]
    if isinstance(x, dict):
        return {k: _to_ours(y, seen) for k, y in x.items()}
    return x


def _leaves(params):
    """The arrays of torch-style params (a list of arrays, of (name, array), or of group dicts)."""
    out = []
    for entry in params if isinstance(params, list) else [params]:
        if isinstance(entry, dict):
            out += _leaves(entry["params"] if isinstance(entry["params"], list) else [entry["params"]])
        elif isinstance(entry, tuple):
            out.append(entry[1])
        else:
            out.append(entry)
    return out


def _torch_record_error(cls_name, record):
    """What torch raises (or warns) for the record: an exception or a Warning instance."""
    inp = record.optimizer_error_input
    params = inp.params if inp.params is not None else _torch_params()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = DB[cls_name].optim_cls(params, **inp.kwargs)
            if record.error_on == common_optimizers.OptimizerErrorEnum.STEP_ERROR:
                for p in _leaves(params):
                    p.grad = torch.ones_like(p)
                opt.step()
        except Exception as e:  # noqa: BLE001 - the exception is the result under test
            return e
    matching = [w.message for w in caught if issubclass(w.category, record.error_type)]
    return matching[0] if matching else None


def _our_record_error(view, cls_name, record):
    inp = record.optimizer_error_input
    seen = {}
    kwargs = _to_ours(inp.kwargs, seen)
    params = _our_params() if inp.params is None else _to_ours(inp.params, seen)
    step = record.error_on == common_optimizers.OptimizerErrorEnum.STEP_ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if view == "factory":
            leaves = _leaves(params)
            error = _our_first_update_error(_RECORD_OF[cls_name].factory, leaves,
                                            [jnp.ones_like(p) for p in leaves], **kwargs)
        elif step:
            error = _adapter_first_step_error(_RECORD_OF[cls_name].cls, params,
                                              [jnp.ones_like(p) for p in _leaves(params)], **kwargs)
        else:
            try:  # not _catch: it silences the warnings under test
                _RECORD_OF[cls_name].adapter_class()(params, **kwargs)
                error = None
            except Exception as e:  # noqa: BLE001 - the exception is the result under test
                error = e
    if error is not None:
        return error
    matching = [w.message for w in caught if issubclass(w.category, record.error_type)]
    return matching[0] if matching else None


def _record_id(case):
    cls_name, i = case
    return f"{cls_name}-{i}-{error_records(cls_name)[i].optimizer_error_input.desc}"


@pytest.mark.parametrize("view", ["factory", "adapter"])
@pytest.mark.parametrize("cls_name, index", ERROR_CASES, ids=[_record_id(c) for c in ERROR_CASES])
def test_torch_error_inputs(cls_name, index, view):
    """Every error input of torch's database: torch fails as the record says (type and regex);
    ours fails with torch's exception (or warning) type and exact message, or the record is
    listed above with the reason it has no analogue in this view or differs on purpose."""
    record = error_records(cls_name)[index]
    desc = record.optimizer_error_input.desc
    theirs = _torch_record_error(cls_name, record)
    assert isinstance(theirs, record.error_type) and re.search(record.error_regex, str(theirs)), theirs
    if view == "factory" and desc in FACTORY_NOT_APPLICABLE:
        return
    # A fresh record: torch's constructor edits the group dicts it is given (named params).
    ours = _our_record_error(view, cls_name, error_records(cls_name)[index])
    if desc == "invalid param type":
        prefix = "params argument given to the optimizer should be "
        assert type(ours) is TypeError and str(ours).startswith(prefix), ours
    elif isinstance(theirs, Warning):
        assert isinstance(ours, record.error_type) and str(ours) == str(theirs), f"{view}: {ours!r}"
    else:
        assert_same_error(ours, theirs, view)


def test_every_error_record_is_classified():
    """A record torch adds is a case here (the list of exceptions names only existing records)."""
    descs = {error_records(c)[i].optimizer_error_input.desc for c, i in ERROR_CASES}
    assert set(FACTORY_NOT_APPLICABLE) <= descs and set(DELIBERATE) <= descs
    assert sorted(_RECORD_OF) == sorted(DB)  # a record for each of torch's optimizers, and no other
    assert len(ERROR_CASES) >= 120


def _as_arrays(value):
    """Every float of an argument set as a 0-d array (torch's Tensor hyperparameters)."""
    if isinstance(value, dict):
        return {k: _as_arrays(x) for k, x in value.items()}
    if isinstance(value, tuple):
        return tuple(map(_as_arrays, value))
    return A(value) if isinstance(value, float) else value


def _validated(info) -> set:
    """The arguments whose values the reference checks (those of the record's `invalid`)."""
    return {k for kwargs in info.invalid for k in kwargs}


def _pairs(info) -> dict:
    """Pair arguments the reference checks (betas, etas, Adafactor's eps) -> the default pair."""
    defaults = inspect.signature(info.factory).parameters
    return {k: defaults[k].default for kwargs in info.invalid for k, x in kwargs.items() if isinstance(x, tuple)}


# Each record's `invalid` (the checks of the reference's __init__ beyond torch's database), as
# given and with 0-d arrays (torch prints float(x)); a Tensor lr of several elements.
CONSTRUCTOR_CHECKS = (
    [(n, kwargs) for n, info in RECORDS.items() for kwargs in info.invalid]
    + [(n, _as_arrays(kwargs)) for n, info in RECORDS.items() for kwargs in info.invalid if _as_arrays(kwargs) != kwargs]
    # (a reference that checks no argument, no `invalid`, accepts it: timm's AdamP)
    + [(n, dict(lr=A([0.1, 0.2, 0.3]))) for n in ALL if RECORDS[n].invalid]
)


# Failures owned by other work, by test id: xfail (strict: the fix makes the case pass and this entry fail).
KNOWN_FAILURES: dict = {}  # case id -> reason (a strict xfail: it fails once fixed)


def _params(cases):
    ids = [f"{c[0]}-{c[1]}" for c in cases]
    return [pytest.param(*c, id=i, marks=[pytest.mark.xfail(reason=KNOWN_FAILURES[i], strict=True)] if i in KNOWN_FAILURES else [])
            for c, i in zip(cases, ids)]


@pytest.mark.parametrize("name, kwargs", _params(CONSTRUCTOR_CHECKS))
def test_constructor_checks(name, kwargs):
    theirs = reference_error(name, kwargs)
    assert_same_error(factory_error(name, kwargs), theirs, "factory")
    assert_same_error(adapter_error(name, kwargs), theirs, "adapter")


@pytest.mark.parametrize("name", ALL)
def test_every_optimizer_accepts_its_defaults_and_0d_array_lr(name):
    """The negative cases above are meaningful only if the valid ones pass: defaults, a 0-d
    array lr (torch's Tensor lr) and a float lr construct on both sides."""
    for kwargs in ({}, dict(lr=A(0.01)), dict(lr=0.01)):
        assert reference_error(name, kwargs) is None
        assert factory_error(name, kwargs) is None, factory_error(name, kwargs)
        assert adapter_error(name, kwargs) is None, adapter_error(name, kwargs)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_tensor_betas_pairs_are_accepted(name):
    kwargs = dict(betas=(A(0.9), A(0.99)))
    assert reference_error(name, kwargs) is None
    assert factory_error(name, kwargs) is None
    assert adapter_error(name, kwargs) is None


@pytest.mark.parametrize("name", [n for n, info in RECORDS.items() if "betas" in _validated(info)
                                  and dict(betas=(0, 0.99)) not in info.invalid])
def test_int_betas_accepted_where_the_reference_has_no_both_floats_rule(name):
    kwargs = dict(betas=(0, 0.99))
    assert reference_error(name, kwargs) is None
    assert factory_error(name, kwargs) is None
    assert adapter_error(name, kwargs) is None


def test_schedule_betas_pair_with_floats():
    """Schedules are an extension: a schedule beta pairs with a float beta (and an array)."""
    ol.adam(betas=(lambda count: 0.9, 0.999))
    ol.adam(betas=(0.9, lambda count: jnp.asarray(0.999)))


# -- deliberate differences (see the module docstring) ----------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=A(0.001), foreach=True), dict(lr=1e-2, betas=(A(0.9), A(0.99)), foreach=True)],
    ids=["tensor-lr-foreach", "tensor-betas-foreach"],
)
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_foreach_tensor_rules_are_torchs(name, kwargs):
    theirs = reference_error(name, kwargs)
    assert isinstance(theirs, ValueError) and "is not supported for capturable=False and foreach=True" in str(theirs)
    for ours in (factory_error(name, kwargs), adapter_error(name, kwargs)):
        assert type(ours) is ValueError and str(ours) == str(theirs)


@pytest.mark.parametrize("name", ALL)
def test_one_element_array_of_higher_rank_is_squeezed_by_the_adapter_and_rejected_by_the_factory(name):
    kwargs = dict(lr=A([[0.01]]))
    assert reference_error(name, kwargs) is None  # torch squeezes it (optimizer._to_scalar)
    assert adapter_error(name, kwargs) is None  # numbers: tests/optim/test_torch_optim_renewed.py::test_tensor_lr
    ours = factory_error(name, kwargs)
    assert isinstance(ours, ValueError)
    assert str(ours).startswith("lr must be a scalar (0-d) array, got shape (1, 1)")


def test_two_element_tensor_beta():
    kwargs = dict(betas=(A([0.9, 0.9]), A(0.99)))
    theirs = reference_error("adam", kwargs)
    assert isinstance(theirs, RuntimeError) and "ambiguous" in str(theirs)
    for ours in (factory_error("adam", kwargs), adapter_error("adam", kwargs)):
        assert isinstance(ours, ValueError) and str(ours) == "Tensor betas[0] must be 1-element"


def test_one_element_array_messages_differ_from_torch_only_in_the_array_repr():
    kwargs = dict(lr=A([[-0.1]]))
    theirs = reference_error("sgd", kwargs)
    assert str(theirs) == "Invalid learning rate: tensor([[-0.1000]])"
    assert isinstance(factory_error("sgd", kwargs), ValueError)


# -- torch errors outside its database records ----------------------------------------------


def test_lbfgs_rejects_groups_as_torch():
    p = torch.nn.Parameter(torch.randn(2, 2))
    theirs = _catch(lambda: torch.optim.LBFGS([{"params": [p]}, {"params": [torch.nn.Parameter(torch.randn(2))]}]))
    ours = _catch(lambda: optim.LBFGS([{"params": [jnp.ones((2, 2))]}, {"params": [jnp.ones(2)]}]))
    assert_same_error(ours, theirs, "adapter")


# -- errors torch raises at step() ---------------------------------------------------------------


def _torch_step_error(cls_name, param, grad, **kwargs):
    p = torch.nn.Parameter(param)
    opt = getattr(torch.optim, cls_name)([p], **kwargs)
    p.grad = grad
    return _catch(opt.step)


def _our_first_update_error(factory, params, grads, **kwargs):
    """The error of building, init-ing and running the first update (whichever raises)."""
    def run():
        tx = factory(**kwargs)
        state = tx.init(params)
        jax.jit(tx.update)(grads, state, params)
    return _catch(run)


def _adapter_first_step_error(cls_name, params, grads, **kwargs):
    def run():
        opt = getattr(optim, cls_name)(params, **kwargs)
        opt.backward(grads)
        opt.step()
    return _catch(run)


@pytest.mark.parametrize(
    "cls_name, factory, shape, dtype, kwargs",
    [
        # torch/optim/_muon.py's checks at step (not records of torch's database)
        ("Muon", ol.muon, (2, 3), "float32", dict(ns_steps=100)),
        ("Muon", ol.muon, (2, 3), "float32", dict(ns_coefficients=(3.0, -4.0))),
    ],
    ids=["muon-ns_steps", "muon-coefficients"],
)
def test_param_errors_torch_raises_at_construction_or_step(cls_name, factory, shape, dtype, kwargs):
    """We raise at the latest at the first update (factory) / first step (adapter); construction
    errors of torch are construction (adapter) or init (factory) errors here."""
    rng = np.random.default_rng(0)
    value = rng.standard_normal(shape).astype(np.float32)
    if dtype == "complex64":
        value = value + 1j * value
    tvalue = torch.tensor(value)
    theirs = _catch(lambda: getattr(torch.optim, cls_name)([torch.nn.Parameter(tvalue)], **kwargs))
    if theirs is None:
        theirs = _torch_step_error(cls_name, tvalue, torch.ones_like(tvalue), **kwargs)
    params = [jnp.asarray(value)]
    grads = [jnp.ones_like(params[0])]
    assert_same_error(_our_first_update_error(factory, params, grads, **kwargs), theirs, "factory")
    assert_same_error(_adapter_first_step_error(cls_name, params, grads, **kwargs), theirs, "adapter")


def test_sparse_adam_dense_grads_step_error():
    theirs = _torch_step_error("SparseAdam", torch.ones(3), torch.ones(3))
    params = [jnp.ones(3)]
    assert_same_error(_our_first_update_error(ol.sparse_adam, params, [jnp.ones(3)]), theirs, "factory")
    assert_same_error(_adapter_first_step_error("SparseAdam", params, [jnp.ones(3)]), theirs, "adapter")


# ---------------------------------------------------------------------------------------------
# 2. wrong argument types
# ---------------------------------------------------------------------------------------------

_WRONG = {"lr": ("0.1", None, [0.1]), "weight_decay": ([1],), "betas": ("ab",), "momentum": ("0.9",), "etas": ("ab",)}
WRONG_TYPES = (
    [(n, {arg: x}, arg) for n, info in RECORDS.items() for arg in _WRONG if arg in _validated(info) for x in _WRONG[arg]]
    + [(n, dict(betas=0.9), "betas") for n in ("adam", "nadam")]
    + [("adafactor", dict(eps=1e-3), "eps"), ("adafactor", dict(d=None), "d")]
    + [("adamw", dict(betas=(0.9, 1e-1j)), "betas[1]")]
)


@pytest.mark.parametrize("name, kwargs, argument", _params(WRONG_TYPES))
def test_wrong_types_raise_torchs_type_with_a_message_naming_the_argument(name, kwargs, argument):
    theirs = reference_error(name, kwargs)
    # timm's `_validate_scalar` (Lion, RMSpropTF) takes float(value): a numeric string passes (ours refuses it).
    assert isinstance(theirs, TypeError) or (theirs is None and kwargs[argument] in ("0.1", "0.9")), theirs
    for where, ours in (("factory", factory_error(name, kwargs)), ("adapter", adapter_error(name, kwargs))):
        assert type(ours) is TypeError, f"{where}: {ours!r}"
        assert str(ours).startswith(f"{argument} must be "), f"{where}: {ours}"
        if argument in kwargs:
            assert repr(kwargs[argument]) in str(ours), f"{where}: {ours}"


def test_complex_lr_is_a_clear_type_error():
    theirs = _catch(lambda: torch.optim.SGD(_torch_params(), lr=torch.tensor(0.1 + 0j)))
    assert type(theirs) is NotImplementedError  # "lt_cpu" not implemented for 'ComplexFloat'
    with pytest.raises(TypeError, match=r"^lr must be a real number, got an array of dtype complex64"):
        ol.sgd(lr=jnp.asarray(0.1 + 0j, jnp.complex64))
    with pytest.raises(TypeError, match=r"^lr must be a real number, got an array of dtype complex64"):
        optim.SGD(_our_params(), lr=jnp.asarray(0.1 + 0j, jnp.complex64))


PAIRS = [(n, argument, default) for n, info in RECORDS.items() for argument, default in _pairs(info).items()]
SHORT_PAIRS = [(n, argument, default[1:]) for n, argument, default in PAIRS] + [("adam", "betas", ())]


@pytest.mark.parametrize("name, argument, value", SHORT_PAIRS)
def test_short_pairs_raise_torchs_index_error_with_a_clear_message(name, argument, value):
    """torch: IndexError('tuple index out of range'); ours: IndexError naming the argument."""
    theirs = reference_error(name, {argument: value})
    assert type(theirs) is IndexError
    for ours in (factory_error(name, {argument: value}), adapter_error(name, {argument: value})):
        assert type(ours) is IndexError and str(ours) == f"{argument} must be a pair {_PAIR[argument]}, got {value!r}."


_PAIR = {"betas": "(beta1, beta2)", "etas": "(etaminus, etaplus)", "eps": "(eps1, eps2)"}


@pytest.mark.parametrize("name, argument, default", PAIRS)
def test_pairs_too_long_are_type_errors(name, argument, default):
    """torch accepts a 3-tuple and fails unpacking it at the first step; we reject it up front."""
    value = (*default, 1.0)
    for ours in (factory_error(name, {argument: value}), adapter_error(name, {argument: value})):
        assert type(ours) is TypeError and str(ours).startswith(f"{argument} must be a pair")


def test_sgd_bool_momentum_is_momentum_one_as_in_torch():
    """torch accepts momentum=True (a number, 1); so do we, with the same trajectory."""
    w = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    g = np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32)
    p = torch.nn.Parameter(torch.tensor(w))
    topt = torch.optim.SGD([p], lr=0.1, momentum=True)
    opt = optim.SGD([jnp.asarray(w)], lr=0.1, momentum=True)
    tx = ol.sgd(lr=0.1, momentum=True)
    params = [jnp.asarray(w)]
    state = tx.init(params)
    for _ in range(3):
        p.grad = torch.tensor(g)
        topt.step()
        opt.backward([jnp.asarray(g)])
        opt.step()
        opt.zero_grad()
        updates, state = tx.update([jnp.asarray(g)], state, params)
        params = ol.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(opt.params[0]), p.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(params[0]), p.detach().numpy(), rtol=1e-6)


def test_check_pair_and_display_helpers():
    with pytest.raises(IndexError, match=r"^x must be a pair \(a, b\), got \(1.0,\)\.$"):
        v.check_pair((1.0,), "x", "(a, b)")
    with pytest.raises(TypeError):
        v.check_pair((1.0,), "x", "(a, b)", indexed=False)
    v.check_pair([1.0, 2.0], "x", "(a, b)")
    assert v.display(jnp.asarray(-0.1, jnp.float32)) == float(np.float32(-0.1))
    assert v.display(np.int32(3)) == np.int32(3)


# ---------------------------------------------------------------------------------------------
# 4. structure mismatches between grads and params
# ---------------------------------------------------------------------------------------------


def _tree():
    # All leaves 2-D (Muon's requirement).
    return {"layer1": {"w": jnp.ones((2, 3)), "b": jnp.ones((1, 3))}, "layer2": {"w": jnp.ones((3, 3))}}


def _bad_grads(kind):
    g = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), _tree())
    if kind == "missing":
        del g["layer1"]["b"]
    elif kind == "extra":
        g["layer1"]["c"] = jnp.ones((1, 3))
    elif kind == "shape":
        g["layer1"]["w"] = jnp.ones((3, 2))
    elif kind == "complex":
        g["layer1"]["w"] = jnp.ones((2, 3), jnp.complex64)
    elif kind == "int":
        g["layer1"]["w"] = jnp.ones((2, 3), jnp.int32)
    elif kind == "bool":
        g["layer1"]["w"] = jnp.ones((2, 3), bool)
    return g


# kind -> (exception type, the path the message must name)
MISMATCHES = {
    "missing": (ValueError, "['layer1']['b']"),
    "extra": (ValueError, "['layer1']['c']"),
    "shape": (ValueError, "['layer1']['w']"),
    "complex": (TypeError, "['layer1']['w']"),
    "int": (TypeError, "['layer1']['w']"),
    "bool": (TypeError, "['layer1']['w']"),
}
DENSE = [n for n, info in RECORDS.items() if info.layout != "sparse" and not info.closure]


def _lbfgs_update(tx):
    def update(grads, state, params):
        return tx.update(grads, state, params, value_fn=lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p)))
    return update


# the jitted form under `slow`: the checks run at trace time, the same code as eager
@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "jit"])
@pytest.mark.parametrize("kind", list(MISMATCHES))
@pytest.mark.parametrize("name", [n for n, info in RECORDS.items() if info.layout != "sparse"])
def test_update_rejects_mismatched_grads_naming_the_leaf(name, kind, jit):
    tx = RECORDS[name].factory()
    params = _tree()
    state = tx.init(params)
    update = _lbfgs_update(tx) if RECORDS[name].closure else tx.update
    if jit:
        update = jax.jit(update)
    error_type, path = MISMATCHES[kind]
    with pytest.raises(error_type) as info:
        update(_bad_grads(kind), state, params)
    assert path in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", ["missing", "extra"])
def test_sparse_adam_rejects_mismatched_grad_structure_naming_the_leaf(kind):
    tx = ol.sparse_adam()
    params = _tree()
    state = tx.init(params)
    grads = jax.tree.map(
        lambda x: RowSparseGrad(jnp.zeros((1,), jnp.int32), jnp.ones((1,) + x.shape[1:])), _bad_grads(kind)
    )
    error_type, path = MISMATCHES[kind]
    with pytest.raises(error_type) as info:
        tx.update(grads, state, params)
    assert path in str(info.value)


def _snapshot(opt):
    leaves = jax.tree.leaves((opt.params, opt.state_dict()["state"]))
    return [np.array(x) for x in leaves]


def _adapter(name):
    return RECORDS[name].new_adapter(_tree(), lr=0.01)


def _good_grads():
    return jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), _tree())


@pytest.mark.parametrize("kind", list(MISMATCHES))
@pytest.mark.parametrize("name", ["sgd", "adam", "muon"])
def test_adapter_backward_names_the_leaf(name, kind):
    opt = _adapter(name)
    error_type, path = MISMATCHES[kind]
    with pytest.raises(error_type) as info:
        opt.backward(_bad_grads(kind))
    assert path in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", list(MISMATCHES))
@pytest.mark.parametrize("name", DENSE)
def test_adapter_rejects_mismatched_grads_and_keeps_its_state(name, kind):
    """backward() or step() raises (before any XLA computation); params, state and the next
    good step are as if the bad gradients had never been given."""
    opt = _adapter(name)
    reference = _adapter(name)
    for o in (opt, reference):
        o.backward(_good_grads())
        o.step()
        o.zero_grad()
    before = _snapshot(opt)

    def bad():
        opt.backward(_bad_grads(kind))
        opt.step()

    error = _catch(bad)
    assert isinstance(error, MISMATCHES[kind][0]), repr(error)
    if kind in ("complex", "int", "bool"):  # reaches the step: the error names the leaf
        assert MISMATCHES[kind][1] in str(error), str(error)
    after = _snapshot(opt)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    opt.zero_grad()
    for o in (opt, reference):
        o.backward(_good_grads())
        o.step()
    for a, b in zip(_snapshot(opt), _snapshot(reference)):
        np.testing.assert_array_equal(a, b)


def test_update_without_params_cannot_check_stateless_structure():
    """Documented limit: `update(grads, state)` without params has nothing to compare the grads
    with in a stateless chain (plain SGD): a missing leaf passes through. With params it is
    rejected (above)."""
    tx = ol.sgd(lr=0.1)
    state = tx.init(_tree())
    updates, _ = tx.update(_bad_grads("missing"), state)
    assert "b" not in updates["layer1"]


# ---------------------------------------------------------------------------------------------
# 3. schedulers: optax_like.optim.lr_scheduler classes and optax_like.schedules factories
# ---------------------------------------------------------------------------------------------

from optax_like import schedules as S  # noqa: E402
from optax_like.optim import lr_scheduler as ours_ls  # noqa: E402
import torch.optim.lr_scheduler as torch_ls  # noqa: E402


def _one(e):
    return lambda epoch: 1.0


# (torch/ours class name, kwargs, functional factory or None, its extra kwargs). The factory is
# called with the class's kwargs (and `lr=0.1` where it takes one); torch's messages from
# torch/optim/lr_scheduler.py.
SCHEDULER_CASES = [
    ("MultiStepLR", dict(milestones=5), S.multi_step_lr, {}),
    ("ConstantLR", dict(factor=1.5), S.constant_lr, {}),
    ("ConstantLR", dict(factor=-0.1), S.constant_lr, {}),
    ("LinearLR", dict(start_factor=0), S.linear_lr, {}),
    ("LinearLR", dict(start_factor=1.5), S.linear_lr, {}),
    ("LinearLR", dict(end_factor=1.5), S.linear_lr, {}),
    ("LinearLR", dict(end_factor=-0.1), S.linear_lr, {}),
    ("CosineAnnealingWarmRestarts", dict(T_0=0), S.cosine_annealing_warm_restarts, {}),
    ("CosineAnnealingWarmRestarts", dict(T_0=1.5), S.cosine_annealing_warm_restarts, {}),
    ("CosineAnnealingWarmRestarts", dict(T_0=2, T_mult=0), S.cosine_annealing_warm_restarts, {}),
    ("CosineAnnealingWarmRestarts", dict(T_0=2, T_mult=1.5), S.cosine_annealing_warm_restarts, {}),
    ("CosineAnnealingWarmRestarts", dict(T_0=2, eta_min="a"), S.cosine_annealing_warm_restarts, {}),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, mode="foo"), S.cyclic_lr, {}),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=0), S.cyclic_lr, {}),
    ("CyclicLR", dict(base_lr=[0.01, 0.02], max_lr=0.1), None, {}),
    ("CyclicLR", dict(base_lr=0.01, max_lr=[0.1, 0.2]), None, {}),
    ("OneCycleLR", dict(max_lr=0.1), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, epochs=2), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=0), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=1.5), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, epochs=0, steps_per_epoch=3), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, epochs=2, steps_per_epoch=0), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=10, pct_start=1.5), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=10, pct_start=-0.1), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=10, anneal_strategy="x"), S.one_cycle_lr, {}),
    ("OneCycleLR", dict(max_lr=[0.1, 0.2], total_steps=10), None, {}),
    ("ReduceLROnPlateau", dict(mode="foo"), S.reduce_lr_on_plateau, {}),
    ("ReduceLROnPlateau", dict(threshold_mode="foo"), S.reduce_lr_on_plateau, {}),
    ("ReduceLROnPlateau", dict(factor=1.0), S.reduce_lr_on_plateau, {}),
    ("ReduceLROnPlateau", dict(min_lr=[0.1, 0.2]), None, {}),
    ("LambdaLR", dict(lr_lambda=[_one(0), _one(1)]), None, {}),
    ("MultiplicativeLR", dict(lr_lambda=[_one(0), _one(1)]), None, {}),
    ("MultiplicativeLR", dict(lr_lambda=3), S.multiplicative_lr, {}),
    ("StepLR", dict(step_size=2, last_epoch=3), None, {}),  # resuming without initial_lr: KeyError
]


def _torch_sgd():
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9)


def _our_sgd():
    return optim.SGD([jnp.ones(2)], lr=0.1, momentum=0.9)


def _factory_kwargs(factory, kwargs):
    names = inspect.signature(factory).parameters
    out = {k: val for k, val in kwargs.items() if k in names}
    if "lr" in names:
        out["lr"] = 0.1
    return out


@pytest.mark.parametrize(
    "cls_name, kwargs, factory, extra", SCHEDULER_CASES,
    ids=[f"{c[0]}-{'-'.join(f'{k}={val}' for k, val in c[1].items() if not isinstance(val, list) or k != 'lr_lambda')}" for c in SCHEDULER_CASES],
)
def test_scheduler_errors_match_torch(cls_name, kwargs, factory, extra):
    theirs = _catch(lambda: getattr(torch_ls, cls_name)(_torch_sgd(), **kwargs))
    ours = _catch(lambda: getattr(ours_ls, cls_name)(_our_sgd(), **kwargs))
    assert_same_error(ours, theirs, "scheduler class")
    if factory is not None:
        assert_same_error(_catch(lambda: factory(**_factory_kwargs(factory, kwargs), **extra)), theirs, factory.__name__)


def _sequential_cases(ls, make_opt):
    opt = make_opt()
    return {
        "empty": lambda: ls.SequentialLR(opt, schedulers=[], milestones=[]),
        "milestones": lambda: ls.SequentialLR(opt, [ls.StepLR(opt, 2), ls.StepLR(opt, 3)], milestones=[1, 2]),
        "not-a-scheduler": lambda: ls.SequentialLR(opt, [ls.StepLR(opt, 2), 3], milestones=[1]),
        "chained-empty": lambda: ls.ChainedScheduler([]),
    }


@pytest.mark.parametrize("case", ["empty", "milestones", "not-a-scheduler", "chained-empty"])
def test_sequential_and_chained_errors_match_torch(case):
    theirs = _catch(_sequential_cases(torch_ls, _torch_sgd)[case])
    ours = _catch(_sequential_cases(ours_ls, _our_sgd)[case])
    assert_same_error(ours, theirs, "scheduler class")
    functional = {
        "empty": lambda: S.sequential_lr([], []),
        "milestones": lambda: S.sequential_lr([S.step_lr(0.1, 2), S.step_lr(0.1, 3)], [1, 2]),
        "chained-empty": lambda: S.chained_scheduler([]),
    }
    if case in functional:
        assert_same_error(_catch(functional[case]), theirs, "functional")


def test_sequential_and_chained_reject_schedulers_of_another_optimizer():
    for ls, make in ((torch_ls, _torch_sgd), (ours_ls, _our_sgd)):
        a, b = make(), make()
        for build in (lambda: ls.SequentialLR(a, [ls.StepLR(a, 2), ls.StepLR(b, 3)], milestones=[1]),
                      lambda: ls.ChainedScheduler([ls.StepLR(a, 2), ls.StepLR(b, 3)])):
            error = _catch(build)
            assert isinstance(error, ValueError)
            assert "expects all schedulers to belong to the same optimizer" in str(error)


def test_cyclic_momentum_needs_momentum_or_betas():
    theirs = _catch(lambda: torch_ls.CyclicLR(torch.optim.Adagrad([torch.nn.Parameter(torch.ones(2))]), 0.01, 0.1))
    ours = _catch(lambda: ours_ls.CyclicLR(optim.Adagrad([jnp.ones(2)]), 0.01, 0.1))
    assert_same_error(ours, theirs, "CyclicLR")
    theirs = _catch(lambda: torch_ls.OneCycleLR(torch.optim.Adagrad([torch.nn.Parameter(torch.ones(2))]), 0.1, 10))
    ours = _catch(lambda: ours_ls.OneCycleLR(optim.Adagrad([jnp.ones(2)]), 0.1, 10))
    assert_same_error(ours, theirs, "OneCycleLR")


def test_scheduler_step_time_errors_match_torch():
    """torch raises these at step(): StepLR(step_size=0) (ZeroDivisionError), OneCycleLR past
    total_steps. The classes raise them at the same step; `step_lr` raises at construction."""
    t_sched, o_sched = torch_ls.StepLR(_torch_sgd(), step_size=0), ours_ls.StepLR(_our_sgd(), step_size=0)
    theirs = _catch(t_sched.step)
    assert_same_error(_catch(o_sched.step), theirs, "StepLR")
    assert_same_error(_catch(lambda: S.step_lr(0.1, 0)), theirs, "step_lr")
    t_sched, o_sched = torch_ls.OneCycleLR(_torch_sgd(), 0.1, total_steps=2), ours_ls.OneCycleLR(_our_sgd(), 0.1, total_steps=2)
    for _ in range(2):
        assert _catch(t_sched.step) is None and _catch(o_sched.step) is None
    assert_same_error(_catch(o_sched.step), _catch(t_sched.step), "OneCycleLR")
    t_sched = torch_ls.CosineAnnealingWarmRestarts(_torch_sgd(), T_0=2)
    o_sched = ours_ls.CosineAnnealingWarmRestarts(_our_sgd(), T_0=2)
    assert_same_error(_catch(lambda: o_sched.step(-1)), _catch(lambda: t_sched.step(-1)), "CosineAnnealingWarmRestarts")


@pytest.mark.parametrize(
    "cls_name, kwargs",
    [("StepLR", dict(step_size=3)), ("LinearLR", dict(start_factor=0.5)), ("OneCycleLR", dict(max_lr=0.1, total_steps=10)),
     ("CosineAnnealingWarmRestarts", dict(T_0=2, T_mult=2)), ("ReduceLROnPlateau", dict(mode="max", threshold_mode="abs"))],
)
def test_valid_scheduler_arguments_are_accepted(cls_name, kwargs):
    assert _catch(lambda: getattr(torch_ls, cls_name)(_torch_sgd(), **kwargs)) is None
    assert _catch(lambda: getattr(ours_ls, cls_name)(_our_sgd(), **kwargs)) is None
