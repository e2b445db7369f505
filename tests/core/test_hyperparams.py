"""Typed hyperparameters (optax_like/core/hyperparams.py) in every view of a factory.

Numbers are floating whatever the default's Python type (an int default never makes a slot that
truncates), flags are compile-time bools that accept what torch's `if flag:` accepts as a
scalar, values that can be neither are TypeErrors naming the argument, and a value beyond the
traced dtype's range is torch's overflow error naming the argument (never a silent inf).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import optim, registry
from optax_like.core import hyperparams


def _int_defaults():
    """(record, argument, other options) for every NUMBER argument of a registry factory whose
    default is an int (torch's `weight_decay=0`, LBFGS's `lr=1`): an int slot would truncate 1e-2
    to 0. The other options are the record's `full` ones (SGD's dampening needs its momentum)."""
    for info in registry.OPTIMIZERS.values():
        signature = inspect.signature(info.factory).parameters
        for name, kind in hyperparams.argument_kinds(info.factory).items():
            default = signature[name].default
            if kind == hyperparams.NUMBER and isinstance(default, int) and not isinstance(default, bool):
                yield info, name, {k: v for k, v in info.full.items() if k != name}


INT_DEFAULTS = list(_int_defaults())


def _run(tx, steps=3):
    p = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    state = tx.init(p)
    update = jax.jit(tx.update)
    for i in range(steps):
        g = {"w": jnp.cos(jnp.arange(6.0) + i).reshape(2, 3)}
        u, state = update(g, state, p)
        p = ol.apply_updates(p, u)
    return p["w"]


# a record marked `slow` (registry) runs here under `slow`
@pytest.mark.parametrize("info,name,extra", [
    pytest.param(i, n, e, id=f"{i.name}-{n}", marks=(pytest.mark.slow,) if i.slow else ()) for i, n, e in INT_DEFAULTS])
def test_injected_int_default_is_a_float_slot_and_an_edit_is_not_truncated(info, name, extra):
    base = dict(extra, **({} if name == "lr" else {"lr": 0.1}))
    tx = ol.inject_hyperparams(info.factory)(**base)
    p = {"w": jnp.ones((2, 3))}
    state = tx.init(p)
    assert jnp.issubdtype(state.hyperparams[name].dtype, jnp.floating)
    if info.closure:  # LBFGS: its update needs a loss; the slot's dtype is what an int default risks
        return
    value = 0.05 if name != "initial_accumulator_value" else 0.3

    def run_edited():
        nonlocal state
        q = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
        state = tx.init(q)
        state.hyperparams[name] = value  # a Python float into a slot whose default was int 0
        if name == "initial_accumulator_value":
            state = tx.init(q)  # read at init only
            return None
        update = jax.jit(tx.update)
        for i in range(3):
            g = {"w": jnp.cos(jnp.arange(6.0) + i).reshape(2, 3)}
            u, state = update(g, state, q)
            q = ol.apply_updates(q, u)
        return q["w"]

    got = run_edited()
    if got is not None:
        expected = _run(info.factory(**{**base, name: value}))
        # traced vs host scalars: a few ulps of the step (the params' scale: an element passing
        # near 0 keeps the step's absolute error; torchao's low-bit Adam: ~6.5e-6 of a step, see
        # its record's deviations)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(expected))))
        assert not np.allclose(got, _run(info.factory(**base)))


FLAG_VALUES = [1, 0, True, np.int64(1), np.bool_(False), jnp.asarray(1), np.asarray([1]), jnp.asarray([0]), 1.0]


@pytest.mark.parametrize("value", FLAG_VALUES, ids=repr)
@pytest.mark.parametrize("cls,flag,extra", [
    ("Adam", "amsgrad", {}), ("Adam", "maximize", {}), ("SGD", "nesterov", {"momentum": 0.9}),
    ("RMSprop", "centered", {}), ("NAdam", "decoupled_weight_decay", {"weight_decay": 0.1}),
])
def test_numbers_for_flags_behave_as_torch_in_the_class_and_inject(cls, flag, extra, value):
    truthy = bool(np.asarray(value).reshape(()))
    shape = (4, 3)
    p = [jnp.ones(shape)]
    ours = getattr(optim, cls)(p, lr=0.01, **extra, **{flag: value})
    tp = torch.nn.Parameter(torch.ones(shape))
    theirs = getattr(torch.optim, cls)([tp], lr=0.01, **extra, **{flag: truthy})
    for i in range(3):
        g = np.cos(np.arange(12.0) + i).reshape(shape).astype(np.float32)
        ours.backward([jnp.asarray(g)])
        ours.step()
        ours.zero_grad()
        tp.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(np.asarray(ours.params[0]), tp.detach().numpy(), rtol=1e-6, atol=1e-7)
    # the functional view through inject_hyperparams takes the same value (a static bool)
    factory = {"Adam": ol.adam, "SGD": ol.sgd, "RMSprop": ol.rmsprop, "NAdam": ol.nadam}[cls]
    injected = _run(ol.inject_hyperparams(factory)(lr=0.01, **extra, **{flag: value}))
    np.testing.assert_allclose(injected, _run(factory(lr=0.01, **extra, **{flag: truthy})), rtol=1e-5)


@pytest.mark.parametrize("value", ["yes", [1, 2], np.ones(2), object()], ids=["str", "list", "array2", "object"])
def test_a_flag_that_is_not_a_scalar_is_a_type_error_naming_it(value):
    with pytest.raises(TypeError, match="amsgrad"):
        ol.inject_hyperparams(ol.adam)(lr=0.01, amsgrad=value)
    with pytest.raises(TypeError, match="amsgrad"):
        optim.Adam([jnp.ones(3)], amsgrad=value).step()


def test_a_traced_flag_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="nesterov is a compile-time flag"):
        jax.jit(lambda f: hyperparams.as_flag(f, "nesterov"))(True)


def test_a_number_slot_given_a_string_is_a_type_error_naming_it():
    tx = ol.inject_hyperparams(ol.sgd)(lr=0.1)
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(TypeError, match="lr must be a real number"):
        state.hyperparams["lr"] = "0.1"
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    opt.param_groups[0]["lr"] = "0.1"
    with pytest.raises(TypeError, match="'lr'"):
        opt.backward([jnp.ones(2)])
        opt.step()


def test_hyperparameters_beyond_float32_raise_torchs_overflow_error_naming_them():
    # torch: SGD(lr=1e308) raises "value cannot be converted to type float without overflow" at
    # step for float32 params. Ours raises it (naming the argument) as soon as the value would be
    # stored in float32: constructing the class, injecting, editing, or the host-scalar step.
    with pytest.raises(RuntimeError, match="without overflow: lr=1e"):
        optim.SGD([jnp.ones(3)], lr=1e308)
    with pytest.raises(RuntimeError, match="without overflow: lr_decay=1e"):
        optim.Adagrad([jnp.ones(3)], lr_decay=1e308)
    opt = optim.SGD([jnp.ones(3)], lr=0.1)
    before = np.asarray(opt.params[0])
    opt.param_groups[0]["lr"] = 1e39
    opt.backward([jnp.ones(3)])
    with pytest.raises(RuntimeError, match="lr=1e\\+39"):
        opt.step()
    np.testing.assert_array_equal(np.asarray(opt.params[0]), before)  # state untouched
    with pytest.raises(RuntimeError, match="without overflow"):
        tx = ol.sgd(lr=1e308)
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}), {"w": jnp.ones(2)})
    tx = ol.inject_hyperparams(ol.sgd)(lr=0.1)
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(RuntimeError, match="lr=1e\\+39"):
        state.hyperparams["lr"] = 1e39


def test_hyperparameters_beyond_float32_are_exact_under_x64(x64):
    """With x64 the traced hyperparameters are float64: torch's Adagrad(lr_decay=1e308) numbers."""
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = torch.optim.Adagrad([p], lr_decay=1e308)
    ours = optim.Adagrad([jnp.ones(3)], lr_decay=1e308)
    for _ in range(3):
        p.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
        ours.backward([jnp.ones(3)])
        ours.step()
        ours.zero_grad()
    np.testing.assert_allclose(np.asarray(ours.params[0]), p.detach().numpy(), rtol=1e-12)
    assert np.isfinite(np.asarray(ours.params[0])).all()


def test_argument_kinds_come_from_the_factory_not_the_value():
    kinds = hyperparams.argument_kinds(ol.adam)
    assert kinds["weight_decay"] == hyperparams.NUMBER and kinds["amsgrad"] == hyperparams.FLAG
    assert hyperparams.argument_kinds(ol.muon)["ns_steps"] == hyperparams.STATIC  # @integer_args
    assert hyperparams.argument_kinds(ol.lbfgs)["max_iter"] == hyperparams.STATIC
