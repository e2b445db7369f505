"""timm's Kron beyond the generic suites (which run the record's example and variants against
timm driven by our draws, `registry` field `draws`): the draws themselves, a balancing step,
dtype options given as torch dtypes, a callable update probability, timm's default schedule,
and timm's optimizer names."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like.optimizers.kron import kron_with_seed
from optax_like.registry import import_reference_module
from optax_like.transforms.kron import (
    _BALANCE_PROB,
    diagonal_dims,
    drive_reference,
    kron_draws,
    precond_update_prob_schedule,
    safe_flatten_shape,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

kron_module = import_reference_module("timm.optim.kron")
SHAPES = ((4, 3), (5,), (2, 3, 2), ())


def _problem(dtype, shapes=SHAPES, steps=12, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def _parity(kwargs, dtype, rtol, *, shapes=SHAPES, steps=12, seed=1337, ours=None):
    """Steps timm's Kron (driven by our draws for `seed`) and `ol.kron` on the same gradients;
    returns the worst relative error (floor 1) over the steps and both final states."""
    with jax.enable_x64(dtype == "float64"):
        init, grads = _problem(dtype, shapes, steps)
        tp = [torch.tensor(p, requires_grad=True) for p in init]
        ref = drive_reference(kron_module.Kron(tp, **kwargs), seed=seed)
        tx = kron_with_seed(seed, **(kwargs if ours is None else ours))
        params: Any = [jnp.asarray(p) for p in init]
        state: Any = tx.init(params)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        worst = 0.0
        for t in range(steps):
            for p, g in zip(tp, grads[t]):
                p.grad = torch.tensor(g)
            ref.step()
            updates, state = step([jnp.asarray(g) for g in grads[t]], state, params)
            params = ol.apply_updates(params, updates)
            for a, b in zip(params, tp):
                b = b.detach().float().numpy() if b.dtype == torch.bfloat16 else b.detach().numpy()
                a = np.asarray(a, np.float64)
                err = np.abs(a - b) / (np.abs(b) + 1)
                worst = max(worst, float(err.max()) if err.size else 0.0)
        print(f"worst relative error {worst:.3e}")
        assert worst <= rtol, f"relative error {worst:.3e} > {rtol:.0e}"
        return worst, state[0], ref


def test_draws_are_a_pure_function_of_seed_index_and_step():
    a = kron_draws(3, 1, 5, (4, 3), jnp.float32)
    b = kron_draws(3, 1, 5, (4, 3), jnp.float32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.V.shape == (4, 3) and a.V.dtype == jnp.float32 and a.balance.shape == ()
    others = [kron_draws(4, 1, 5, (4, 3), jnp.float32), kron_draws(3, 2, 5, (4, 3), jnp.float32),
              kron_draws(3, 1, 6, (4, 3), jnp.float32)]
    assert all(not np.array_equal(np.asarray(o.V), np.asarray(a.V)) for o in others)
    assert 0.0 <= float(a.balance) < 1.0 and 0.0 <= float(a.weight_decay) < 1.0


def _balancing_seed(steps, index=0, shape=(4, 3)):
    """A seed whose draws balance param `index` (a 2-D param) within `steps` steps."""
    for seed in range(200):
        if any(float(kron_draws(seed, index, t, shape, jnp.float32).balance) < _BALANCE_PROB
               for t in range(1, steps + 1)):
            return seed
    raise AssertionError("no balancing seed")


def test_a_balancing_step_matches_timm():
    """timm balances a param's factors (`_balance_Q`) when its uniform draw is below 0.01 at a
    preconditioner update: a seed whose draws do so for the (4, 3) param within 12 steps."""
    seed = _balancing_seed(12)
    worst, _, _ = _parity(dict(lr=1e-2, weight_decay=1e-2, precond_init_scale=3.0), "float64", 1e-12, seed=seed)
    assert worst < 1e-14
    _parity(dict(lr=1e-2, weight_decay=1e-2, precond_init_scale=3.0), "float32", 1e-5, seed=seed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_callable_update_probability_matches_timm(dtype):
    """A callable probability gets timm's step (ours: the traced step count; jnp-compatible)."""
    prob = lambda n: 1.0 / (1 + n % 3)  # noqa: E731 (updates at counter >= 1, 2, 3, ...)
    _parity(dict(lr=1e-2, preconditioner_update_probability=prob), dtype, 1e-12 if dtype == "float64" else 1e-5)


def test_deterministic_flag_matches_timm():
    """timm's `deterministic` seeds a generator per probe from its Python stream; with our draws
    the probes are ours either way (`deterministic` is accepted and ignored here)."""
    _parity(dict(lr=1e-2, deterministic=True), "float64", 1e-12)


@pytest.mark.parametrize("mu, precond, dtype, rtol", [
    # measured 1.8e-5: a bfloat16 momentum on both sides, whose entries may round to neighbours
    # (float32 ulps of the product and sum before the rounding), 1/256 of a step apart
    (torch.bfloat16, None, "float32", 1e-4),
    (None, torch.float32, "float64", 1e-7),  # measured 8.6e-9: float32 preconditioner for float64 params
    (torch.float32, torch.float32, "float32", 1e-6),  # measured 3.2e-8
])
def test_dtype_options_given_as_torch_dtypes_match_timm(mu, precond, dtype, rtol):
    """`mu_dtype` / `precond_dtype` as timm takes them (torch dtypes, read here by name); the
    state holds them in those dtypes, as timm's, and its state dict loads into timm."""
    kwargs = dict(lr=1e-2, mu_dtype=mu, precond_dtype=precond)
    _, state, ref = _parity(kwargs, dtype, rtol)
    for i, p in enumerate(ref.param_groups[0]["params"]):
        theirs = ref.state[p]
        assert str(state.momentum_buffer[i].dtype) == str(theirs["momentum_buffer"].dtype).removeprefix("torch.")
        assert [str(q.dtype) for q in state.Q[i]] == [str(q.dtype).removeprefix("torch.") for q in theirs["Q"]]


def test_default_schedule_is_timms_float32_math():
    """`precond_update_prob_schedule` in float32 as timm's (`torch.tensor(n, float32)`): the same
    thresholds `1 / prob` over the anneal (steps 0..6000)."""
    n = np.arange(6000)
    ours = np.asarray(jax.jit(precond_update_prob_schedule)(jnp.asarray(n)))
    theirs = np.array([kron_module.precond_update_prob_schedule(int(k)).item() for k in n], np.float32)
    assert np.max(np.abs(ours - theirs) / theirs) <= 2 ** -23  # exp: at most one float32 ulp apart
    # the update decisions a counter makes (counter >= 1 / prob for counters up to 40) are the same
    for counter in range(1, 41):
        assert np.array_equal(counter >= 1 / ours, counter >= 1 / theirs)


def test_structure_is_timms():
    """Which dims get diagonal factors and how `flatten` reshapes, as timm's `_init_Q_exprs` and
    `safe_flatten` (their einsum expressions are checked by the parity runs)."""
    for shape in [(), (5,), (1, 4), (4, 3), (3, 4), (2, 3, 2), (4, 4), (2049, 3), (3, 3, 5, 2)]:
        t = torch.zeros(shape)
        for mode in (None, "one_diag", "smart_one_diag", "all_diag"):
            for max_size, min_ndim in ((2048, 2), (3, 1)):
                q, _ = kron_module._init_Q_exprs(t, 1.0, max_size, min_ndim, mode)
                diag = diagonal_dims(shape, max_size, min_ndim, mode)
                assert [x.dim() < 2 for x in q] == (list(diag) if shape else [True]), (shape, mode)
        for start, end in ((2, -1), (0, -1), (1, 2), (0, 0)):
            assert safe_flatten_shape(shape, start, end) == tuple(kron_module.safe_flatten(t, start, end).shape)
    with pytest.raises(ValueError, match="Invalid memory_save_mode"):
        ol.kron(memory_save_mode="two_diag")


@pytest.mark.parametrize("name", ["kron", "kronw", "kronc"])
def test_timm_names_resolve_to_kron(name, x64):
    """`create_optimizer_v2(params, opt=name)` for timm's Kron names (a list of params: no
    grouping): timm's class with the name's options and `momentum` (timm's name table), driven
    by our draws, and ours step the same."""
    from optax_like.optim import grouping
    from optax_like.param_groups._timm import TIMM_OPTIMIZERS

    reference, kind, options = TIMM_OPTIMIZERS[name]
    assert reference == "timm.optim.kron.Kron" and "m" in kind
    init, grads = _problem("float64", SHAPES, 6)
    tp = [torch.tensor(p, requires_grad=True) for p in init]
    theirs = drive_reference(kron_module.Kron(tp, lr=1e-2, weight_decay=0.05, momentum=0.9, **options))
    ours = grouping.create_optimizer_v2([jnp.asarray(p) for p in init], name, lr=1e-2, weight_decay=0.05)
    assert type(ours).__name__ == "Kron"
    for g in grads:
        for p, gi in zip(tp, g):
            p.grad = torch.tensor(gi)
        theirs.step()
        ours.zero_grad()
        ours.backward([jnp.asarray(gi) for gi in g])
        ours.step()
    for a, b in zip(ours.params, tp):
        np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert {k: ours.param_groups[0][k] for k in options} == options


# ------------------------------------------------------------------------------- param groups
def test_group_0_draws_are_unchanged_and_other_groups_draw_apart():
    """`kron_draws(..., group)`: group 0's key is `(seed, index, step)` as before groups were
    keyed (single-group runs keep their numbers); another group folds its index in."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), 1), 3)
    k_balance, k_v, k_wd = jax.random.split(key, 3)
    for draws in (kron_draws(7, 1, 3, (4, 3), jnp.float32), kron_draws(7, 1, 3, (4, 3), jnp.float32, group=0)):
        np.testing.assert_array_equal(np.asarray(draws.V), np.asarray(jax.random.normal(k_v, (4, 3), jnp.float32)))
        assert float(draws.balance) == float(jax.random.uniform(k_balance, ()))
        assert float(draws.weight_decay) == float(jax.random.uniform(k_wd, ()))
    others = [kron_draws(7, 1, 3, (4, 3), jnp.float32, group=g) for g in (1, 2)]
    assert not np.array_equal(np.asarray(others[0].V), np.asarray(others[1].V))
    assert all(not np.array_equal(np.asarray(o.V), np.asarray(kron_draws(7, 1, 3, (4, 3), jnp.float32).V))
               for o in others)


# two groups of the same shapes: a group's param i draws apart from the other group's param i
GROUP_NAMES = (("a.b", "a.w"), ("b.b", "b.w"))  # (the plan's order: names sorted within a group)
GROUP_SHAPES = {"a.b": (5,), "a.w": (4, 3), "b.b": (5,), "b.w": (4, 3)}
GROUP_KWARGS: dict[str, Any] = dict(lr=1e-2, weight_decay=1e-2, preconditioner_update_probability=1.0,
                                    stochastic_weight_decay=True)


def _group_problem(steps):
    rng = np.random.default_rng(5)
    init = {n: rng.standard_normal(s) for n, s in GROUP_SHAPES.items()}
    return init, [{n: rng.standard_normal(s) for n, s in GROUP_SHAPES.items()} for _ in range(steps)]


def _timm_groups(init, grads, second_lr):
    """timm's Kron over two groups (the second at `second_lr`), driven by our draws: its
    params after each step."""
    tp = {n: torch.tensor(v, requires_grad=True) for n, v in init.items()}
    ref = drive_reference(kron_module.Kron(
        [{"params": [tp[n] for n in GROUP_NAMES[0]]}, {"params": [tp[n] for n in GROUP_NAMES[1]], "lr": second_lr}],
        **GROUP_KWARGS))
    out = []
    for g in grads:
        for n, v in g.items():
            tp[n].grad = torch.tensor(v)
        ref.step()
        out.append({n: t.detach().numpy().copy() for n, t in tp.items()})
    return out


def _class_groups(init, grads, second_lr, how="constructor"):
    """`optim.Kron` over the two groups (made by the constructor, by `add_param_group`, or
    loaded from a state dict half way): its params after each step."""
    def new(params):
        groups = [{"params": params[0]}, {"params": params[1], "lr": second_lr}]
        if how == "add_param_group":
            opt = ol.optim.Kron(groups[:1], **GROUP_KWARGS)
            opt.add_param_group(groups[1])
            return opt
        return ol.optim.Kron(groups, **GROUP_KWARGS)

    opt = new([[jnp.asarray(init[n]) for n in names] for names in GROUP_NAMES])
    out = []
    for t, g in enumerate(grads):
        if how == "loaded" and t == len(grads) // 2:  # a fresh optimizer over the current params, loaded
            saved = opt.state_dict()
            opt = new([list(group) for group in opt.params])
            opt.load_state_dict(saved)
        opt.zero_grad()
        opt.backward([[jnp.asarray(g[n]) for n in names] for names in GROUP_NAMES])
        opt.step()
        out.append(dict(zip([n for names in GROUP_NAMES for n in names],
                            [np.asarray(p) for group in opt.params for p in group])))
    return out


def _functional_groups(init, grads, second_lr):
    """`param_groups.partition` with a rule making the second group: its params after each step."""
    from optax_like import param_groups as pg

    rules = [pg.Rule("b.*", set={"lr": second_lr})]
    params: Any = {k: {j: jnp.asarray(init[f"{k}.{j}"]) for j in "bw"} for k in "ab"}
    assert [g.names for g in pg.plan(params, rules, ol.kron, **GROUP_KWARGS).groups] == list(GROUP_NAMES)
    tx = pg.partition(rules, ol.kron, **GROUP_KWARGS)
    state, step = tx.init(params), jax.jit(lambda g, s, p: tx.update(g, s, p))
    out = []
    for g in grads:
        updates, state = step({k: {j: jnp.asarray(g[f"{k}.{j}"]) for j in "bw"} for k in "ab"}, state, params)
        params = ol.apply_updates(params, updates)
        out.append({f"{k}.{j}": np.asarray(params[k][j]) for k in "ab" for j in "bw"})
    return out


def _worst(ours, theirs):
    return max(float(np.max(np.abs(o[n] - t[n]) / (np.abs(t[n]) + 1))) for o, t in zip(ours, theirs) for n in o)


@pytest.mark.parametrize("view", ["class", "class-add_param_group", "class-loaded", "functional"])
def test_two_groups_draw_their_own_values_as_timm(view, x64):
    """timm draws from one stream over all its groups; ours keys each group's draws on its
    position (`make_optimizer_class(group_index=...)`, the factory's `param_group`; the
    functional param-groups builder passes it too), which `drive_reference` feeds timm: two
    groups of the same shapes, the preconditioner updated at every step, float64, 10 steps
    (measured 4e-17; without the group index 3.6e-3, the second group drawing the first's)."""
    init, grads = _group_problem(10)
    theirs = _timm_groups(init, grads, 5e-3)
    if view == "functional":
        ours = _functional_groups(init, grads, 5e-3)
    else:
        ours = _class_groups(init, grads, 5e-3, how=view.partition("-")[2] or "constructor")
    worst = _worst(ours, theirs)
    print(f"worst relative error {worst:.3e}")
    assert worst <= 1e-12


@pytest.mark.parametrize("view", ["class", "functional", "timm"])
def test_identical_groups_move_apart(view, x64):
    """Two groups with the same params, gradients and hyperparameters: their probes differ, so
    their params do after a step, ours and timm's as `drive_reference` drives it (timm's one
    stream over its groups); they were equal while draws repeated across groups."""
    init, grads = _group_problem(1)
    init.update({"b.b": init["a.b"], "b.w": init["a.w"]})
    grads[0].update({"b.b": grads[0]["a.b"], "b.w": grads[0]["a.w"]})
    run = {"class": _class_groups, "functional": _functional_groups, "timm": _timm_groups}[view]
    ours = run(init, grads, GROUP_KWARGS["lr"])[-1]
    assert not np.array_equal(ours["a.w"], ours["b.w"]) and not np.array_equal(ours["a.b"], ours["b.b"])


def test_the_group_index_is_static_per_group_and_not_a_constructor_argument():
    """`group_index`: the factory's `param_group` gets each group's position as a compile-time
    value (each group's spec differs); not in the class's signature nor its `defaults`."""
    import inspect

    opt = ol.optim.Kron([{"params": [jnp.ones((4, 3))]}, {"params": [jnp.ones((4, 3))]}])
    assert "param_group" not in inspect.signature(ol.optim.Kron).parameters and "param_group" not in opt.defaults
    specs = [dict(record.spec.static_items) for record in opt._groups]
    assert [s["param_group"] for s in specs] == [0, 1]
    with pytest.raises(TypeError, match="param_group"):
        ol.optim.Kron([jnp.ones(3)], param_group=1)


# ------------------------------------------------------------------------------- dtype arguments
@pytest.mark.parametrize("given", ["float32", jnp.float32, np.dtype("float32"), torch.float32])
def test_dtype_arguments_read_by_one_helper(given):
    """`mu_dtype` / `precond_dtype`: a dtype, a scalar type, a name or a torch dtype, read by
    `core.hyperparams.as_dtype` (as AdafactorBigVision's `momentum_dtype` and `drive_reference`)."""
    from optax_like.core.hyperparams import as_dtype

    assert as_dtype(given, "mu_dtype", allowed="floating") == np.dtype("float32")
    state: Any = ol.kron(mu_dtype=given, precond_dtype=given).init([jnp.ones((4, 3), jnp.bfloat16)])
    state = state[0]
    assert state.momentum_buffer[0].dtype == jnp.float32 and [q.dtype for q in state.Q[0]] == [jnp.float32] * 2
    assert as_dtype(None, "mu_dtype") is None


@pytest.mark.parametrize("name", ["mu_dtype", "precond_dtype"])
@pytest.mark.parametrize("given", ["int32", torch.int32, jnp.int32, "complex64", "bool"])
def test_non_floating_dtypes_are_refused_naming_the_argument(name, given):
    """timm checks neither (an integer dtype fails at its first step: a RuntimeError or NotImplementedError):
    refused at construction in every view, naming the argument."""
    from optax_like.transforms.kron import scale_by_kron

    kwargs: dict[str, Any] = {name: given}
    for make in (lambda: ol.kron(**kwargs), lambda: scale_by_kron(**kwargs),
                 lambda: ol.optim.Kron([jnp.ones(3)], **kwargs)):
        with pytest.raises(ValueError, match=f"{name} must be a floating dtype"):
            make()
    with pytest.raises(TypeError, match=f"{name} must be a dtype"):
        ol.kron(**{name: "not_a_dtype"})  # pyright: ignore[reportArgumentType]


def test_adafactor_big_vision_momentum_dtype_keeps_its_errors():
    """`momentum_dtype_of` reads through the same helper: timm's AssertionError for another
    name or dtype, our TypeError for a value that is no dtype."""
    from optax_like.transforms.adafactor_big_vision import momentum_dtype_of

    assert momentum_dtype_of(torch.bfloat16) == momentum_dtype_of("bfloat16") == jnp.dtype("bfloat16")
    assert momentum_dtype_of(np.dtype("float32")) == np.dtype("float32")
    for bad in ("float64", torch.float64, jnp.float64, "foo", None):
        with pytest.raises(AssertionError, match="dtype not supported"):
            momentum_dtype_of(bad)
    with pytest.raises(TypeError, match="momentum_dtype must be a dtype"):
        momentum_dtype_of(3)


# ------------------------------------------------------------------------------- stochastic decay
@pytest.mark.parametrize("view", ["functional", "class"])
@pytest.mark.parametrize("options", [dict(decoupled_decay=True), dict(decoupled_decay=True, corrected_weight_decay=True),
                                     dict()], ids=["decoupled", "corrected", "coupled"])
def test_stochastic_decay_is_timms_float64_scalar_math(view, options, x64):
    """timm's stochastic decay `2 * rng.random() * wd` and decoupled factor `1. - lr * wd` are
    Python float64 math, rounded once into the float32 param (`p.mul_`): with x64 ours too.
    Zero gradients (the preconditioned step is 0): the params are the decay's alone, bit for
    bit, 20 steps (the decoupled factor computed in float32 differed in 294 elements)."""
    kwargs: dict[str, Any] = dict(lr=0.3, weight_decay=0.7, stochastic_weight_decay=True, **options)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    tp = [torch.tensor(p, requires_grad=True) for p in init]
    ref = drive_reference(kron_module.Kron(tp, **kwargs))
    zeros = [jnp.zeros(s, jnp.float32) for s in SHAPES]
    if view == "class":
        opt = ol.optim.Kron([jnp.asarray(p) for p in init], **kwargs)
    else:
        tx = ol.kron(**kwargs)
        params: Any = [jnp.asarray(p) for p in init]
        state, step = tx.init(params), jax.jit(lambda g, s, p: tx.update(g, s, p))
    for _ in range(20):
        for p in tp:
            p.grad = torch.zeros_like(p)
        ref.step()
        if view == "class":
            opt.zero_grad()
            opt.backward(zeros)
            opt.step()
            ours: Any = list(opt.params)
        else:
            updates, state = step(zeros, state, params)
            params = ours = ol.apply_updates(params, updates)
        for a, b in zip(ours, tp):
            np.testing.assert_array_equal(np.asarray(a), b.detach().numpy())
    assert not np.array_equal(np.asarray(ours[0]), init[0])  # it decayed


# ------------------------------------------------------------------------------- structure errors
def test_flatten_is_timms_safe_flatten_for_every_dim_pair():
    """`safe_flatten_shape` against timm's `safe_flatten` for start and end dims in [-6, 6):
    the same shape, or torch's error (type and message) where `t.flatten` raises. Negative
    start dims pass timm's guards as given and wrap in torch's `flatten` (its end dim twice)."""
    for shape in [(), (5,), (1, 4), (4, 3), (2, 3, 2), (3, 3, 5, 2)]:
        t = torch.zeros(shape)
        for start in range(-6, 6):
            for end in range(-6, 6):
                try:
                    theirs: Any = tuple(kron_module.safe_flatten(t, start, end).shape)
                except (IndexError, RuntimeError) as error:
                    theirs = (type(error), str(error))
                try:
                    ours: Any = safe_flatten_shape(shape, start, end)
                except (IndexError, RuntimeError) as error:
                    ours = (type(error), str(error))
                assert ours == theirs, (shape, start, end)


def test_negative_flatten_dims_match_timm():
    """`flatten_start_dim=-1, flatten_end_dim=-3`: (4, 3) flattens dim -1 alone (unchanged;
    `end` -1 after timm's clip), (5,) stays (start past end): timm's shapes and numbers."""
    _parity(dict(lr=1e-2, flatten=True, flatten_start_dim=-1, flatten_end_dim=-3), "float64", 1e-12,
            shapes=((4, 3), (5,)), steps=4)


def test_structure_errors_name_the_param():
    """timm's "Einstein runs out of letters" (more than 13 dims after `flatten`) and torch's
    `flatten` errors are raised at init, naming the param (path, leaf index, shape)."""
    params = {"a": jnp.ones((3,)), "deep": jnp.ones((1,) * 14)}
    with pytest.raises(ValueError, match=r"Got tensor with dim 14; Einstein runs out of letters! "
                                         r"\(param \['deep'\], leaf 1, shape \(1, 1, 1"):
        ol.kron().init(params)
    ol.kron(flatten=True, flatten_start_dim=0).init(params)  # flattened to 1 dim: fine, as timm's
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-1, 0\], but got "
                                         r"-3\) \(param \['a'\], leaf 0, shape \(3,\)\)"):
        ol.kron(flatten=True, flatten_start_dim=-3).init(params)


@pytest.mark.parametrize("layer_groups", [False, True], ids=["one_group", "a_group_per_layer"])
def test_stacked_layers_draw_as_the_unstacked_models_params(layer_groups, x64):
    """Each layer of a stacked leaf is a param of the unstacked model, with its own draws (its
    index, its group's): `param_groups.partition(..., stacked=...)` runs Kron slice by slice
    (the record's `layers_vectorised=False`) and has the unstacked model's numbers, bit for bit
    (vmapped, every layer drew the first's: 4e-3 apart)."""
    from optax_like import param_groups as pg

    n = 3
    rng = np.random.default_rng(0)
    flat = {**{f"blocks.{i}.w": rng.standard_normal((4, 3)) for i in range(n)}, "head": rng.standard_normal(5)}

    def stacked(d):
        return {"blocks": {"w": jnp.stack([jnp.asarray(d[f"blocks.{i}.w"]) for i in range(n)])},
                "head": jnp.asarray(d["head"])}

    def unstacked(d):
        return {"blocks": {str(i): {"w": jnp.asarray(d[f"blocks.{i}.w"])} for i in range(n)},
                "head": jnp.asarray(d["head"])}

    kwargs: dict[str, Any] = dict(lr=1e-2, weight_decay=1e-2, preconditioner_update_probability=1.0)
    rules = [pg.Rule(f"blocks.{i}.*", scale={"lr": 0.5 ** i}) for i in range(n)] if layer_groups else []
    tx_flat = pg.partition(rules, ol.kron, **kwargs)
    tx_stacked = pg.partition(rules, ol.kron, stacked=("blocks",), **kwargs)
    p_flat: Any = unstacked(flat)
    p_stacked: Any = stacked(flat)
    s_flat, s_stacked = tx_flat.init(p_flat), tx_stacked.init(p_stacked)
    for _ in range(3):
        g = {k: rng.standard_normal(np.shape(v)) for k, v in flat.items()}
        u, s_flat = jax.jit(tx_flat.update)(unstacked(g), s_flat, p_flat)
        p_flat = ol.apply_updates(p_flat, u)
        u, s_stacked = jax.jit(tx_stacked.update)(stacked(g), s_stacked, p_stacked)
        p_stacked = ol.apply_updates(p_stacked, u)
    for i in range(n):
        np.testing.assert_array_equal(np.asarray(p_stacked["blocks"]["w"][i]),
                                      np.asarray(p_flat["blocks"][str(i)]["w"]))
    np.testing.assert_array_equal(np.asarray(p_stacked["head"]), np.asarray(p_flat["head"]))
