"""Property-based tests (hypothesis) of every functional optimizer and its stateful adapter.

For each configuration in `CASES` (one per record of optax_like/registry.py and one per variant
of a record; LBFGS, which steps through a closure, has its own suite), over random pytrees
(nested dicts, lists and tuples with None leaves, 0-d and size-0 arrays, several shapes, mixed
dtypes; the record's `layout` and `complex`), bounded values (|x| <= 10, nonzero |x| >= 1e-20)
and hyperparameters drawn from the record's `valid` ranges (its `flags` drawn by the eager test):

- `test_update_invariants`: a few eager steps, then one with a None gradient leaf. Updates and
  state are finite; updates have the params' shapes and dtypes (float16/bfloat16 params get
  float32 updates: the compute dtype, rounded once by `apply_updates`, see core.base); state
  buffers have the params' dtype and shape (Adafactor's factored `row_var`/`col_var`: the
  reduced shapes); None leaves stay None; a None gradient leaf keeps that leaf's state (buffers
  and per-leaf counters) bit-identical and gives the other leaves exactly the update of the full
  step (torch's `p.grad is None` rule). float16/bfloat16/float32/complex64 by default,
  float64/complex128 under the scoped `x64` fixture.
- `test_jit_matches_eager`: `jax.jit(update)` agrees with the eager update to within 16 ulps
  (or 8 eps of the leaf's scale), NOT bit-exactly: XLA:CPU contracts `a * b + c` into an FMA
  inside jitted fusions (see `JIT_TOLERANCE`); float16/bfloat16 results were bit-identical.
  Compared: the new params (`apply_updates`) and the state, every step. The hyperparameters are
  jax scalars (the traced path that `inject_hyperparams` and the adapter use), so one
  compilation per configuration (per example for a record with adapter `snapshots`) serves
  every example; `slow` adds host-float hyperparameters (one compilation per example) and float64.
- `test_state_dict_round_trip`: `optax_like.optim.<Class>` with backward(grads)/step(): a few
  steps, `state_dict()` -> fresh instance -> `load_state_dict` -> more steps gives the params
  and the state of the uninterrupted run bit-identically.

Budget: the default run takes each record's plain configuration (its variants under `slow`),
the float64 invariants for one record in two and jit-vs-eager for the others (`HALF_IDS`),
with small `max_examples` and `derandomize=True` (deterministic in CI), and a fixed tree per
configuration for the jitted tests, so that jit caches hit; the `slow` tests run the same
properties with more examples. The records' ranges exclude values at which the reference itself
is not finite on finite input (eps = 0 with a zero gradient is 0/0 in Adam; centered RMSprop with
alpha near 0 takes the square root of a rounding-negative variance; Adafactor's eps1**2 flushes
to 0 in float32 for eps1 < 1e-19); each exclusion is noted at its record.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.experimental import sparse as jsparse

import optax_like as ol
from optax_like import optim, registry
from optax_like.core.numerics import compute_dtype
from optax_like.core.torch_layout import torch_layout_of
from optax_like.core import LeafScalars
from optax_like.core.tree import is_none
from optax_like.registry import Interval

# ---------------------------------------------------------------------------------------------
# Settings.
# ---------------------------------------------------------------------------------------------

_COMMON = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAST = settings(max_examples=6, **_COMMON)
FAST64 = settings(max_examples=3, **_COMMON)
FAST_JIT = settings(max_examples=4, **_COMMON)
FAST_ADAPTER = settings(max_examples=3, **_COMMON)
SLOW = settings(max_examples=100, **_COMMON)
SLOW_JIT = settings(max_examples=25, **_COMMON)

BOUND = 10.0  # |params|, |grads| <= BOUND
# Nonzero |params|, |grads| >= TINY: XLA:CPU flushes subnormal results to zero (torch does not), and
# a sign taken of one (Lion's sign(lerp(m, g, 1 - beta1))) turns the difference between an FMA's
# flushed result (jit) and a rounded product (eager) into lr: g = 1.18e-38 (float32's smallest
# normal), m = 0, beta1 = 0.5 steps by -lr eagerly (as timm) and by 0 jitted.
TINY = 1e-20

# ---------------------------------------------------------------------------------------------
# Optimizer configurations: one case per registry record and one per variant (optax_like/registry.py).
# ---------------------------------------------------------------------------------------------


def _floats(lo: float, hi: float) -> st.SearchStrategy:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _drawn(valid, default) -> st.SearchStrategy:
    """A record's `Interval` (0.0 too when `or_zero`, None too where the default is None), or a
    tuple of them (pairs: betas, etas, ...) as a tuple strategy."""
    if isinstance(valid, tuple):
        return st.tuples(*(_drawn(v, d) for v, d in zip(valid, default if isinstance(default, tuple) else [0.0] * 2)))
    strategy = _floats(valid.lo, valid.hi)
    strategy = st.one_of(st.just(0.0), strategy) if valid.or_zero else strategy
    return st.one_of(st.none(), strategy) if default is None else strategy


def _is_range(value) -> bool:
    return isinstance(value, Interval) or (isinstance(value, tuple) and all(isinstance(v, Interval) for v in value))


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One configuration of a record: `factory(**fixed, **numeric)`. The eager test also draws
    the record's `flags` (compile-time options, so the jitted tests keep `fixed`: the flag
    values of the record's `example`, and a variant's fixed values)."""

    id: str
    info: registry.OptimizerInfo
    fixed: dict
    numeric: st.SearchStrategy  # of {name: float | tuple}
    flags: tuple  # (name, strategy) pairs drawn by the eager test
    variant: str | None = None

    factory = property(lambda self: self.info.factory)
    layout = property(lambda self: self.info.layout)  # "any" | "matrix" (2-D leaves) | "sparse"
    # complex params where no configuration the case draws is one its reference refuses them in
    complex_ok = property(lambda self: not any(
        self.info.refuses_complex(self.kwargs({}, dict(zip([n for n, _ in self.flags], values))))
        for values in itertools.product(*(self.info.flags[n] for n, _ in self.flags))))

    def kwargs(self, numeric: dict, flags: dict | None = None) -> dict:
        return {**self.fixed, **(flags or {}), **numeric}


def _cases(info: registry.OptimizerInfo) -> list[Case]:
    defaults = {k: p.default for k, p in inspect.signature(info.factory).parameters.items()}
    out = []
    for variant, overrides in [(None, {}), *info.variants.items()]:
        fixed = {k: v for k, v in info.example.items() if k in info.flags}
        fixed.update((k, v) for k, v in overrides.items() if not _is_range(v))
        ranges = {**info.valid, **{k: v for k, v in overrides.items() if _is_range(v)}}
        numeric = st.fixed_dictionaries({k: _drawn(v, defaults[k]) for k, v in ranges.items() if k not in fixed})
        flags = tuple((k, st.sampled_from(values)) for k, values in info.flags.items() if k not in overrides)
        out.append(Case(info.name if variant is None else f"{info.name}-{variant}", info, fixed, numeric, flags, variant))
    return out


# LBFGS steps through a closure (`value_fn`), not gradients.
CASES = [case for info in registry.OPTIMIZERS.values() if not info.closure for case in _cases(info)]
CASE_IDS = [c.id for c in CASES]
# The default run: one case per record; its variants run under `slow`.
# (A record marked `slow` in the registry: all its cases.)
DEFAULT_IDS = [pytest.param(c.id, marks=(pytest.mark.slow,) if c.variant or c.info.slow else ()) for c in CASES]
# Two of the default run's four property tests take half the records each (alternately, in the
# registry's order): every record gets one of them by default, both under `slow`.
_DEFAULT_CASES = [c.id for c in CASES if not (c.variant or c.info.slow)]
HALF_IDS = [[pytest.param(c.id, marks=(pytest.mark.slow,) if c.id not in _DEFAULT_CASES or
                          _DEFAULT_CASES.index(c.id) % 2 != half else ()) for c in CASES] for half in (0, 1)]


def test_every_functional_optimizer_has_a_record():
    functions = {name for name in ol.optimizers.__all__ if name[0].islower() and callable(getattr(ol, name))}
    helpers = {f for info in registry.OPTIMIZERS.values() for f in info.extra_functions}  # read a state
    assert functions - helpers == set(registry.OPTIMIZERS)
    assert {c.info.name for c in CASES} == {n for n, info in registry.OPTIMIZERS.items() if not info.closure}
    for info in registry.OPTIMIZERS.values():
        assert info.adapter_class().__name__ == info.cls


# ---------------------------------------------------------------------------------------------
# Trees: structures over a small menu of shapes, so that eager kernels and jit caches hit.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
    shape: tuple
    dtype: str


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, Leaf)


SHAPES = {
    "any": [(), (3,), (2, 3), (2, 0)],
    "matrix": [(2, 3), (4, 4), (0, 3)],
    "sparse": [(3,), (4, 2)],
}
LOW = ["float16", "bfloat16", "float32"]


def _dtypes(case: Case, wide: bool) -> list[str]:
    if wide:
        return ["float64"] + (["complex128"] if case.complex_ok else [])
    return LOW + (["complex64"] if case.complex_ok else [])


@st.composite
def spec_trees(draw, case: Case, wide: bool = False):
    """A random tree of `Leaf` specs and None: dicts/lists/tuples, depth <= 3, >= 1 array leaf."""
    leaf = st.builds(Leaf, st.sampled_from(SHAPES[case.layout]), st.sampled_from(_dtypes(case, wide)))
    node = st.recursive(
        st.one_of(leaf, leaf, st.none()),
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.dictionaries(st.sampled_from(["w", "b", "emb", "x"]), children, min_size=1, max_size=3),
        ),
        max_leaves=5,
    )
    root = draw(st.one_of(
        st.lists(node, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from(["layer", "head", "norm"]), node, min_size=1, max_size=3),
    ))
    if not [x for x in jax.tree.leaves(root, is_leaf=_is_spec_leaf) if x is not None]:
        root = {"extra": root, "w": Leaf(SHAPES[case.layout][-1], "float32")}
    return root


def _fixed_tree(case: Case, wide: bool = False):
    """The fixed tree of the jitted tests: every dtype of the case, None, 0-d and size-0 leaves
    (shapes from `SHAPES`, so that the eager half reuses the eager test's kernels)."""
    f, lo, h, c = ("float64", "float32", "float64", "complex128") if wide else ("float32", "bfloat16", "float16", "complex64")
    c = c if case.complex_ok else f
    if case.layout == "matrix":
        return {"a": Leaf((4, 4), f), "b": [Leaf((2, 3), lo), None, (Leaf((2, 3), h), Leaf((0, 3), f))]}
    if case.layout == "sparse":
        return {"emb": Leaf((4, 2), f), "b": [Leaf((3,), lo), None], "t": (Leaf((4, 2), h),)}
    return {"a": Leaf((2, 3), f), "b": [Leaf((3,), lo), None, (Leaf((), h), Leaf((2, 0), f))], "c": Leaf((2, 3), c)}


def _values(shape, dtype: str) -> st.SearchStrategy:
    elements = _floats(-BOUND, BOUND).map(lambda x: x if abs(x) >= TINY else 0.0)
    real = hnp.arrays(np.float64, shape, elements=elements)
    if dtype.startswith("complex"):
        return st.tuples(real, real).map(lambda ri: jnp.asarray(ri[0] + 1j * ri[1], dtype))
    return real.map(lambda x: jnp.asarray(x, dtype))


def arrays_like(spec) -> st.SearchStrategy:
    """A strategy of array trees with `spec`'s structure, shapes and dtypes, |x| <= BOUND."""
    leaves, treedef = jax.tree.flatten(spec, is_leaf=_is_spec_leaf)
    parts = [st.none() if s is None else _values(s.shape, s.dtype) for s in leaves]
    return st.tuples(*parts).map(lambda xs: treedef.unflatten(list(xs)))


@st.composite
def sparse_grads_like(draw, spec):
    """A tree of row-sparse gradients (`RowSparseGrad`, duplicate rows allowed) for `spec`."""
    leaves, treedef = jax.tree.flatten(spec, is_leaf=_is_spec_leaf)
    out = []
    for i, s in enumerate(leaves):
        if s is None:
            out.append(None)
            continue
        rows = s.shape[0]
        nnz = draw(st.sampled_from([0, 2]))
        idx = np.asarray(draw(st.lists(st.integers(0, rows - 1), min_size=nnz, max_size=nnz)), np.int32)
        values = draw(_values((nnz, *s.shape[1:]), s.dtype))
        # RowSparseGrad here; the jitted tests use BCOO (one form each keeps compilations few).
        out.append(ol.RowSparseGrad(jnp.asarray(idx), values))
    return treedef.unflatten(out)


def _bcoo_grads_like(spec, nnz: int = 2):
    """Fixed-nnz sparse gradients for `spec` (the adapter's and the jit test's: one compile):
    a `RowSparseGrad` for the first leaf, BCOO for the others."""

    @st.composite
    def strategy(draw):
        leaves, treedef = jax.tree.flatten(spec, is_leaf=_is_spec_leaf)
        out = []
        for s in leaves:
            if s is None:
                out.append(None)
                continue
            idx = np.asarray(draw(st.lists(st.integers(0, s.shape[0] - 1), min_size=nnz, max_size=nnz)), np.int32)
            values = draw(_values((nnz, *s.shape[1:]), s.dtype))
            if not out:
                out.append(ol.RowSparseGrad(jnp.asarray(idx), values))
            else:
                out.append(jsparse.BCOO((values, jnp.asarray(idx[:, None])), shape=s.shape))
        return treedef.unflatten(out)

    return strategy()


def grads_like(case: Case, spec) -> st.SearchStrategy:
    return sparse_grads_like(spec) if case.layout == "sparse" else arrays_like(spec)


def _is_grad_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (ol.RowSparseGrad, jsparse.BCOO))


# ---------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------


def _leaves(tree) -> list:
    return jax.tree.leaves(tree, is_leaf=is_none)


# Per-leaf scalars (torch's per-param `step`, `eta`, ...) are `core.leaf_scalars.LeafScalars` nodes.


def _params_shaped(state, params):
    """(field name, subtree) for every sub-tree of `state` with the params' structure, and
    (field name, vector) for every 1-D per-leaf vector (torch's per-param scalars: step, eta...)."""
    treedef = jax.tree.structure(params, is_leaf=is_none)
    n = len([p for p in _leaves(params) if p is not None])
    shaped, vectors = [], []

    def visit(node, name):
        if isinstance(node, LeafScalars):  # before the structure test: it is a pytree node
            vectors.append((name, np.asarray(node)))
            return
        try:
            same = jax.tree.structure(node, is_leaf=is_none) == treedef
        except Exception:  # pragma: no cover - exotic nodes
            same = False
        if same and not isinstance(node, jax.Array):
            shaped.append((name, node))
        elif isinstance(node, tuple) and hasattr(node, "_fields"):
            # a declared `lists` field (timm Kron's `Q`: a tuple of factors per param) is neither
            # params-shaped nor per-leaf vectors (a factor of n entries is not a per-leaf vector)
            lists = torch_layout_of(node).lists if torch_layout_of(node) is not None else ()
            for field, child in zip(node._fields, node):
                if field not in lists:
                    visit(child, field)
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child, name)
        elif isinstance(node, dict):
            for key, child in node.items():
                visit(child, key)
        elif isinstance(node, jax.Array) and node.ndim == 1 and node.shape[0] == n:
            vectors.append((name, np.asarray(node)))

    visit(state, None)
    return shaped, vectors


def _expected_state_shape(name, shape):
    if name == "row_var":
        return (*shape[:-1], 1)
    if name == "col_var":
        return (*shape[:-2], 1, shape[-1])
    return shape


def _is_finite(x) -> bool:
    x = np.asarray(jnp.asarray(x).astype(jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64)) \
        if jax.config.jax_enable_x64 else np.asarray(jnp.asarray(x).astype(jnp.complex64 if jnp.iscomplexobj(x) else jnp.float32))
    return bool(np.all(np.isfinite(x)))


def check_updates(params, grads, updates):
    """Finite updates with the params' shapes and (compute) dtypes; None where no param/gradient."""
    treedef = jax.tree.structure(params, is_leaf=is_none)
    for i, (p, g, u) in enumerate(zip(_leaves(params), treedef.flatten_up_to(grads), treedef.flatten_up_to(updates))):
        if p is None or g is None:
            assert u is None, f"leaf {i}: a None param/gradient must give a None update, got {u!r}"
            continue
        # float16/bfloat16 updates come in float32 (the compute dtype), so that
        # `apply_updates` rounds p + u once, as torch's `param.add_(u)` does (core.base).
        assert u.dtype == compute_dtype(p.dtype), f"leaf {i}: update dtype {u.dtype} for a {p.dtype} param"
        assert u.shape == p.shape, f"leaf {i}: update shape {u.shape} != param shape {p.shape}"
        assert _is_finite(u), f"leaf {i} ({p.dtype}{p.shape}): non-finite update {u}"


def _declared(state, what: str) -> set:
    """The buffer fields the state's types declare `what` (core.torch_layout: `own_dtype`, a
    dtype other than the param's; `reduced`, leaves that are not params-shaped)."""
    nodes = jax.tree.leaves(state, is_leaf=lambda x: torch_layout_of(x) is not None)
    return {f for node in nodes if torch_layout_of(node) is not None
            for f in getattr(torch_layout_of(node), what)}


def check_state(params, state):
    """State buffers follow the params (dtype, shape, None; but for those the state's types
    declare `own_dtype` / `reduced`) and are finite; counters finite."""
    p_leaves = _leaves(params)
    shaped, vectors = _params_shaped(state, params)
    own_dtype, reduced = _declared(state, "own_dtype"), _declared(state, "reduced")
    for name, sub in shaped:
        for i, (p, s) in enumerate(zip(p_leaves, _leaves(sub))):
            if p is None:
                assert s is None, f"state {name} leaf {i}: a None param must have None state"
                continue
            if s is None:  # a buffer this leaf does not use (max_exp_avg_sq, adafactor's split)
                continue
            assert s.dtype == p.dtype or name in own_dtype, f"state {name} leaf {i}: dtype {s.dtype} != param dtype {p.dtype}"
            assert s.shape == _expected_state_shape(name, p.shape) or name in reduced, f"state {name} leaf {i}: shape {s.shape}"
            assert _is_finite(s), f"state {name} leaf {i}: non-finite {s}"
    for name, vec in vectors:
        assert _is_finite(vec), f"state {name}: non-finite {vec}"


def check_step(params, grads, updates, state):
    check_updates(params, grads, updates)
    check_state(params, state)


def check_none_grad_rule(params, grads, j, before, after, full_updates, full_state, updates, skip_others=False):
    """Leaf j (a None gradient) keeps its state; the other leaves step as in the full step."""
    p_leaves = _leaves(params)
    index = len([p for p in p_leaves[:j] if p is not None])  # j's entry in per-leaf vectors
    treedef = jax.tree.structure(params, is_leaf=is_none)
    assert treedef.flatten_up_to(updates)[j] is None
    b_shaped, b_vectors = _params_shaped(before, params)
    a_shaped, a_vectors = _params_shaped(after, params)
    f_shaped, f_vectors = _params_shaped(full_state, params)
    assert [n for n, _ in b_shaped] == [n for n, _ in a_shaped]
    for (name, b), (_, a), (_, f) in zip(b_shaped, a_shaped, f_shaped):
        bl, al, fl = _leaves(b), _leaves(a), _leaves(f)
        assert (bl[j] is None) == (al[j] is None)
        if bl[j] is not None:
            np.testing.assert_array_equal(np.asarray(al[j]), np.asarray(bl[j]), err_msg=f"state {name} of the None-grad leaf changed")
        if not skip_others:
            for i, (x, y) in enumerate(zip(al, fl)):
                if i != j and x is not None:
                    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"state {name} leaf {i}")
    for (name, b), (_, a), (_, f) in zip(b_vectors, a_vectors, f_vectors):
        assert np.asarray(a)[index] == np.asarray(b)[index], f"per-leaf {name} of the None-grad leaf changed"
        if not skip_others:
            mask = np.arange(len(np.asarray(a))) != index
            np.testing.assert_array_equal(np.asarray(a)[mask], np.asarray(f)[mask], err_msg=f"per-leaf {name}")
    if not skip_others:
        for i, (u, fu) in enumerate(zip(treedef.flatten_up_to(updates), treedef.flatten_up_to(full_updates))):
            if i != j and u is not None:
                np.testing.assert_array_equal(np.asarray(u), np.asarray(fu), err_msg=f"update of leaf {i}")


def _with_none(grads, params, j):
    treedef = jax.tree.structure(params, is_leaf=is_none)
    leaves = treedef.flatten_up_to(grads)
    leaves[j] = None
    return treedef.unflatten(leaves)


def _apply(params, updates):
    return ol.apply_updates(params, updates)


# ---------------------------------------------------------------------------------------------
# Property 1 (eager): finite, dtype/shape/None preserving, torch's grad-None rule.
# ---------------------------------------------------------------------------------------------


@st.composite
def eager_examples(draw, case: Case, wide: bool):
    spec = draw(spec_trees(case, wide))
    numeric = draw(case.numeric)
    flags = {name: draw(s) for name, s in case.flags}
    params = draw(arrays_like(spec))
    steps = draw(st.integers(1, 3))
    grads = [draw(grads_like(case, spec)) for _ in range(steps + 1)]
    present = [i for i, p in enumerate(_leaves(params)) if p is not None]
    j = draw(st.sampled_from(present))
    return case.kwargs(numeric, flags), params, grads, j


def run_update_invariants(case: Case, example):
    kwargs, params, grads, j = example
    tx = case.factory(**kwargs)
    state = ol.per_leaf_scalars(tx.init(params))  # the last step leaves one gradient None
    check_state(params, state)
    for g in grads[:-1]:
        updates, state = tx.update(g, state, params)
        check_step(params, g, updates, state)
        params = _apply(params, updates)
        assert all(_is_finite(p) for p in _leaves(params) if p is not None)
    g = grads[-1]
    full_updates, full_state = tx.update(g, state, params)
    partial = _with_none(g, params, j)
    updates, new_state = tx.update(partial, state, params)
    check_step(params, partial, updates, new_state)
    # Adafactor's eps1=None is the machine epsilon of the first param with a gradient (torch
    # fixes it per group): dropping that param's gradient may change the other leaves. A
    # configuration that couples the leaves (the record's `coupling`: timm Lamb's one clip over
    # every gradient) changes them too (the None-grad leaf's own state is still checked).
    skip = (case.info.name == "adafactor" and kwargs["eps"][0] is None) or case.info.couples(kwargs)
    check_none_grad_rule(params, partial, j, state, new_state, full_updates, full_state, updates, skip_others=skip)


def _eager_test(settings_, wide):
    def make(case):
        @settings_
        @given(example=eager_examples(case, wide))
        def inner(example):
            run_update_invariants(case, example)

        return inner

    return make


_EAGER = {c.id: _eager_test(FAST, False)(c) for c in CASES}
_EAGER64 = {c.id: _eager_test(FAST64, True)(c) for c in CASES}
_EAGER_SLOW = {c.id: _eager_test(SLOW, False)(c) for c in CASES}
_EAGER64_SLOW = {c.id: _eager_test(SLOW_JIT, True)(c) for c in CASES}


@pytest.mark.parametrize("case_id", DEFAULT_IDS)
def test_update_invariants(case_id):
    _EAGER[case_id]()


@pytest.mark.parametrize("case_id", HALF_IDS[0])
def test_update_invariants_float64(case_id, x64):
    _EAGER64[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_update_invariants_slow(case_id):
    _EAGER_SLOW[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_update_invariants_float64_slow(case_id, x64):
    _EAGER64_SLOW[case_id]()


# ---------------------------------------------------------------------------------------------
# Property 2: jax.jit(update) equals the eager update, bit for bit.
# ---------------------------------------------------------------------------------------------


def _as_arrays(numeric: dict) -> dict:
    """Hyperparameters as jax scalars of the default float dtype (None stays None)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(float)), numeric)


def _snapshots(case: Case, numeric: dict) -> tuple:
    """Host values a factory takes beside traced hyperparameters, as the adapter passes them (its
    `snapshots`: timm's `max_lr_snapshot`, the constructor's lr). Static: one compilation each."""
    def host(value):  # a number, or a pair (Mars's `betas_1d`: the constructor's betas)
        return tuple(map(float, value)) if isinstance(value, tuple) else float(value)

    return tuple((k, host(numeric[arg])) for k, arg in case.info.adapter.get("snapshots", {}).items()
                 if arg in numeric and k not in case.fixed)  # a given entry is not a snapshot


def _update_with(case: Case, hypers: dict, grads, state, params, snapshots=()):
    tx = case.factory(**case.kwargs(hypers), **dict(snapshots))
    return tx.update(grads, state, params)


# Not bit-exact: inside a jitted fusion XLA:CPU contracts `a * b + c` into one FMA, eagerly the
# product is rounded first. Measured over the default examples (float32/complex64 leaves):
# params <= 8 ulps, state <= 11 ulps (31 for ASGD's complex64 `ax`; the slow run found 1024 for
# Adam's p - u with u ~ p: 1 ulp of p); float16/bfloat16 results bit-identical. Allowed: 16 ulps,
# or 8 eps of the leaf's scale (its largest magnitude before or after the step).
JIT_TOLERANCE = (16, 8.0)

_jit_update_with = jax.jit(_update_with, static_argnums=0, static_argnames="snapshots")


def ulp_distance(x, y) -> np.ndarray:
    """Elementwise distance in units in the last place (complex: the larger of the two parts)."""
    x, y = np.asarray(x), np.asarray(y)
    if np.iscomplexobj(x):
        return np.maximum(ulp_distance(x.real, y.real), ulp_distance(x.imag, y.imag))
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[x.dtype.itemsize]

    def ordered(a):
        i = a.view(bits).astype(np.int64)
        return np.where(i < 0, np.iinfo(bits).min - i, i)  # monotonic in the float value, -0 == +0

    return np.abs(ordered(x) - ordered(y))


ULP_LOG: list = []


def assert_ulp_equal(a, b, what: str, max_ulps: int = 0, scale_eps: float = 0.0, operands=None,
                     rtol64: float | None = None, rtol: float | None = None) -> None:
    """Trees `a` and `b` agree leaf by leaf: same structure, dtypes and shapes; each element
    within `max_ulps` ulps, or within `scale_eps` epsilons of the leaf's scale: its largest
    magnitude in `a`, `b` and `operands` (a tree like `a`, e.g. the values before the step). The
    error an FMA makes next to a cancellation is an ulp of the operands, not of the result.
    `rtol64`: float64 leaves within that fraction of the leaf's scale (a record's rtol32: its
    math is float32's, torchao's low-bit Adam, so its float64 results differ by float32 ulps);
    `rtol`: every leaf within that fraction of its scale (a record's `jit_rtol`: its math rounds
    to bfloat16 mid-step)."""
    la, ta = jax.tree.flatten(a, is_leaf=is_none)
    lb, tb = jax.tree.flatten(b, is_leaf=is_none)
    assert ta == tb, f"{what}: structures differ: {ta} vs {tb}"
    lo = [None] * len(la) if operands is None else ta.flatten_up_to(operands)
    for i, (x, y, o) in enumerate(zip(la, lb, lo)):
        assert (x is None) == (y is None), f"{what} leaf {i}: None vs array"
        if x is None:
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what} leaf {i}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        xa, ya = np.asarray(x), np.asarray(y)
        if not jnp.issubdtype(xa.dtype, jnp.inexact):
            np.testing.assert_array_equal(xa, ya, err_msg=f"{what} leaf {i}")
            continue
        d = ulp_distance(xa, ya)
        ULP_LOG.append((what, i, str(xa.dtype), int(d.max()) if d.size else 0))
        ok = d <= max_ulps
        if scale_eps and d.size:
            wide = np.complex128 if np.iscomplexobj(xa) else np.float64
            xw, yw = xa.astype(wide), ya.astype(wide)
            scale = max(float(np.abs(xw).max()), float(np.abs(yw).max()))
            if o is not None and np.size(o):
                scale = max(scale, float(np.abs(np.asarray(o).astype(wide)).max()))
            diff = np.abs(xw - yw)
            ok |= diff <= scale_eps * float(jnp.finfo(xa.dtype).eps) * scale
            if rtol64 is not None and xa.dtype in (np.float64, np.complex128):
                ok |= diff <= rtol64 * scale
            if rtol is not None:
                ok |= diff <= rtol * scale
        assert np.all(ok), f"{what} leaf {i} ({xa.dtype}): {int(d.max())} ulps apart:\n{xa!r}\n{ya!r}"


def assert_bit_equal(a, b, what: str) -> None:
    assert_ulp_equal(a, b, what, 0)


def _sparse_aware_grads(case: Case, spec):
    return _bcoo_grads_like(spec) if case.layout == "sparse" else arrays_like(spec)


@st.composite
def jit_examples(draw, case: Case, wide: bool):
    spec = _fixed_tree(case, wide)
    numeric = draw(case.numeric)
    params = draw(arrays_like(spec))
    grads = [draw(_sparse_aware_grads(case, spec)) for _ in range(2)]
    return numeric, params, grads


def run_jit_matches_eager(case: Case, example, host_hypers: bool):
    numeric, params, grads = example
    if host_hypers:  # Python floats: host float64 scalar math, one compilation per example
        tx = case.factory(**case.kwargs(numeric))
        eager, jitted = tx.update, jax.jit(tx.update)
        state = tx.init(params)
    else:  # jax scalars: the traced path; one compilation per case serves every example
        hypers, snapshots = _as_arrays(numeric), _snapshots(case, numeric)
        eager = functools.partial(_update_with, case, hypers, snapshots=snapshots)
        jitted = functools.partial(_jit_update_with, case, hypers, snapshots=snapshots)
        state = case.factory(**case.kwargs(hypers), **dict(snapshots)).init(params)
    for t, g in enumerate(grads):
        u_e, s_e = eager(g, state, params)
        u_j, s_j = jitted(g, state, params)
        # Compared through the new params: ASGD's update is `new_p - p` (so its error is an ulp
        # of p), and float16/bfloat16 updates are float32 (rounded once into the param).
        rtol64, rtol = case.info.rtol32, case.info.jit_rtol
        assert_ulp_equal(_apply(params, u_j), _apply(params, u_e), f"step {t + 1} params", *JIT_TOLERANCE, params,
                         rtol64=rtol64, rtol=rtol)
        assert_ulp_equal(s_j, s_e, f"step {t + 1} state", *JIT_TOLERANCE, state, rtol64=rtol64, rtol=rtol)
        check_step(params, g, u_e, s_e)
        params, state = _apply(params, u_e), s_e


def _jit_test(settings_, wide, host_hypers):
    def make(case):
        @settings_
        @given(example=jit_examples(case, wide))
        def inner(example):
            run_jit_matches_eager(case, example, host_hypers)

        return inner

    return make


_JIT = {c.id: _jit_test(FAST_JIT, False, False)(c) for c in CASES}
_JIT_SLOW = {c.id: _jit_test(SLOW_JIT, False, False)(c) for c in CASES}
_JIT_HOST_SLOW = {c.id: _jit_test(settings(max_examples=5, **_COMMON), False, True)(c) for c in CASES}
_JIT64_SLOW = {c.id: _jit_test(settings(max_examples=5, **_COMMON), True, False)(c) for c in CASES}


@pytest.mark.parametrize("case_id", HALF_IDS[1])
def test_jit_matches_eager(case_id):
    _JIT[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_jit_matches_eager_slow(case_id):
    _JIT_SLOW[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_jit_matches_eager_host_hyperparameters_slow(case_id):
    _JIT_HOST_SLOW[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_jit_matches_eager_float64_slow(case_id, x64):
    _JIT64_SLOW[case_id]()


# ---------------------------------------------------------------------------------------------
# Property 3: the adapter's state_dict round trip continues the run exactly.
# ---------------------------------------------------------------------------------------------


@st.composite
def adapter_examples(draw, case: Case, wide: bool):
    spec = _fixed_tree(case, wide)
    numeric = draw(case.numeric)
    params = draw(arrays_like(spec))
    before = draw(st.integers(1, 2))
    after = draw(st.integers(1, 2))
    grads = [draw(_sparse_aware_grads(case, spec)) for _ in range(before + after)]
    return numeric, params, grads, before


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _run(opt, grads):
    for g in grads:
        opt.zero_grad()
        opt.backward(g)
        opt.step()


def run_round_trip(case: Case, example):
    numeric, params, grads, before = example
    new = case.info.new_adapter  # (a record's `before_step` called: schedulefree's train())
    kwargs = case.kwargs(numeric)
    reference = new(_copy(params), **kwargs)  # the optimizer owns (donates) what it is given
    _run(reference, grads)
    first = new(_copy(params), **kwargs)
    _run(first, grads[:before])
    saved = first.state_dict()
    second = new(_copy(first.params), **kwargs)
    second.load_state_dict(saved)
    _run(second, grads[before:])
    assert_bit_equal(second.params, reference.params, "params")
    a, b = second.state_dict(), reference.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert sorted(a["state"]) == sorted(b["state"])
    for pid in a["state"]:
        assert sorted(a["state"][pid]) == sorted(b["state"][pid]), f"param {pid}: state keys"
        for key in a["state"][pid]:
            x, y = a["state"][pid][key], b["state"][pid][key]
            if x is None or y is None:  # a declared "present but None" entry (timm SGDW's momentum_buffer)
                assert x is None and y is None, f"param {pid} {key!r}: None vs {x if y is None else y!r}"
                continue
            if isinstance(x, (list, tuple)):  # a declared list of tensors (timm Kron's Q): element by element
                assert isinstance(y, (list, tuple)) and len(x) == len(y), f"param {pid} {key!r}: lengths"
                for i, (xi, yi) in enumerate(zip(x, y)):
                    assert_bit_equal(jnp.asarray(xi), jnp.asarray(yi), f"param {pid} {key!r}[{i}]")
                continue
            assert_bit_equal(jnp.asarray(x), jnp.asarray(y), f"param {pid} {key!r}")


def _adapter_test(settings_, wide):
    def make(case):
        @settings_
        @given(example=adapter_examples(case, wide))
        def inner(example):
            run_round_trip(case, example)

        return inner

    return make


_ADAPTER = {c.id: _adapter_test(FAST_ADAPTER, False)(c) for c in CASES}
_ADAPTER_SLOW = {c.id: _adapter_test(SLOW_JIT, False)(c) for c in CASES}
_ADAPTER64_SLOW = {c.id: _adapter_test(settings(max_examples=5, **_COMMON), True)(c) for c in CASES}


@pytest.mark.parametrize("case_id", DEFAULT_IDS)
def test_state_dict_round_trip(case_id):
    _ADAPTER[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_state_dict_round_trip_slow(case_id):
    _ADAPTER_SLOW[case_id]()


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_state_dict_round_trip_float64_slow(case_id, x64):
    _ADAPTER64_SLOW[case_id]()


def test_sparse_adam_adapter_accumulates_row_sparse_grads():
    """Two backward() calls of RowSparseGrads step as their sum would (torch adds sparse .grad)."""
    params = {"emb": jnp.ones((4, 2)), "b": [jnp.ones((3,)), None]}
    opt = optim.SparseAdam(_copy(params), lr=0.1)
    g1 = {"emb": ol.RowSparseGrad(jnp.array([0, 2], jnp.int32), jnp.full((2, 2), 0.5)),
          "b": [ol.RowSparseGrad(jnp.array([1], jnp.int32), jnp.ones((1,))), None]}
    g2 = {"emb": ol.RowSparseGrad(jnp.array([2], jnp.int32), jnp.full((1, 2), -2.0)),
          "b": [ol.RowSparseGrad(jnp.array([0], jnp.int32), jnp.ones((1,))), None]}
    opt.backward(g1)
    opt.backward(g2)
    opt.step()
    both = jax.tree.map(lambda a, b: None if a is None else ol.RowSparseGrad(
        jnp.concatenate([a.indices, b.indices]), jnp.concatenate([a.values, b.values])), g1, g2, is_leaf=_is_grad_leaf)
    tx = ol.sparse_adam(lr=0.1)
    updates, state = tx.update(both, tx.init(params), params)
    # The adapter's step is jitted (FMA contraction), the functional update here eager.
    assert_ulp_equal(opt.params, _apply(params, updates), "params", *JIT_TOLERANCE)
    # Param ids follow jax.tree.leaves order: b[0] is 0, emb is 1.
    assert_ulp_equal(opt.state[1]["exp_avg"], state[0].exp_avg["emb"], "exp_avg", *JIT_TOLERANCE)
    updates2, _ = tx.update(g2, tx.init(params), params)  # the last gradient alone differs
    assert not np.allclose(np.asarray(opt.params["emb"]), np.asarray(_apply(params, updates2)["emb"]))
