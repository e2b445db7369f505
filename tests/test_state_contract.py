"""The state contract: an optimizer state's pytree structure is fixed at `init`.

- Structure invariance, for every optimizer and combinator: `update` returns a state with the
  structure it was given, for a full gradient tree and (per-leaf form) for gradients that are
  None for some leaves; the jitted update compiles once for a fixed gradient structure.
- The shared form `init` returns refuses a gradient tree with None for some leaves at trace time
  (eager, `jit`, `lax.scan`), naming the leaf and the fix, never jax's carry error.
- Property test (hypothesis) against the live reference (torch's class, or timm's): random trees,
  random leaves without gradient at random steps (torch's `p.grad = None`), float64, under `jit`
  and under `lax.scan` (a scan per run of equal None patterns), each step compared.

Configurations: each registry record's `example` (optax_like/registry.py), and under `slow` each
of its `variants` applied to the example.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_like as ol
from optax_like.core.leaf_scalars import LeafScalars, NoneGradientError
from optax_like import registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclasses.dataclass(frozen=True)
class Config:
    """A record's `example`, or one of its `variants` applied to the example."""

    info: registry.OptimizerInfo
    kwargs: dict
    variant: str | None = None

    id = property(lambda self: self.info.name + (f"-{self.variant}" if self.variant else ""))
    matrix_only = property(lambda self: self.info.layout == "matrix")
    # variants, and every case of a record marked `slow` (registry), run under `slow`
    marks = property(lambda self: (pytest.mark.slow,) if self.variant or self.info.slow else ())

    def functional(self):
        return self.info.factory(**self.kwargs)

    def reference(self, params):
        return self.info.new_reference(params, **self.kwargs)


def configs(info: registry.OptimizerInfo) -> list[Config]:
    """The example, then each variant (`info.variant_kwargs`) that changes it."""
    out = [Config(info, dict(info.example))]
    for variant in info.variants:
        kwargs = info.variant_kwargs(variant)
        if kwargs != info.example:
            out.append(Config(info, kwargs, variant))
    return out


# A closure-driven optimizer (LBFGS) and row-sparse gradients (SparseAdam) have their own suites.
CONFIGS = [c for info in registry.OPTIMIZERS.values() if not info.closure and info.layout != "sparse" for c in configs(info)]

def _combinators():
    """Each combinator wrapping Adam (or SGD): (id, transformation)."""
    adam = lambda: ol.adam(0.01, weight_decay=0.1)
    return [
        ("chain", ol.chain(ol.add_decayed_weights(0.1), ol.trace(0.9), ol.scale_by_learning_rate(0.1))),
        ("named_chain", ol.named_chain(("m", ol.scale_by_adam()), ("lr", ol.scale_by_learning_rate(0.01)))),
        ("masked", ol.masked(adam(), {"a": True, "b": False, "c": True})),
        ("multi_transform", ol.multi_transform({"x": adam(), "y": ol.sgd(0.1, momentum=0.9)},
                                               {"a": "x", "b": "y", "c": "x"})),
        ("inject_hyperparams", ol.inject_hyperparams(ol.adam)(lr=0.01, weight_decay=0.1)),
        ("MultiSteps", ol.MultiSteps(adam(), 2).gradient_transformation()),
        ("apply_if_finite", ol.apply_if_finite(adam(), 2)),
        ("grouped", ol.grouped(adam())),
    ]


PARAMS = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.asarray([0.5, -2.0, 1.5]),
          "c": jnp.ones((3, 2))}


def _grads(seed, params, missing=()):
    keys = jax.random.split(jax.random.key(seed), len(params))
    return {k: None if k in missing else jax.random.normal(key, params[k].shape)
            for (k, key) in zip(sorted(params), keys)}


def _has_shared(state) -> bool:
    return any(isinstance(n, LeafScalars) and n.is_shared
               for n in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, LeafScalars)))


@pytest.mark.parametrize("name, make, matrix_only", [
    *(pytest.param(c.id, c.functional, c.matrix_only, id=c.id, marks=c.marks) for c in CONFIGS),
    *(pytest.param(name, lambda tx=tx: tx, False, id=name) for name, tx in _combinators()),
])
def test_update_never_changes_the_state_structure(name, make, matrix_only):
    tx = make()
    params = {k: v.reshape(3, -1) if matrix_only and v.ndim == 1 else v for k, v in PARAMS.items()}
    if matrix_only:
        params["b"] = jnp.ones((3, 1)) * 0.5
    update = jax.jit(tx.update)
    # Shared form: every leaf has a gradient (or none has one).
    state = tx.init(params)
    structure = jax.tree.structure(state)
    for i in range(3):
        _, state = update(_grads(i, params), state, params)
        assert jax.tree.structure(state) == structure
    if name == "MultiSteps":  # whether a leaf steps is decided at run time: needs per-leaf form
        with pytest.raises(NoneGradientError, match="per_leaf_scalars"):
            update(_grads(9, params, missing=("a", "b", "c")), state, params)
    else:
        _, state = update(_grads(9, params, missing=("a", "b", "c")), state, params)
        assert jax.tree.structure(state) == structure
    if name == "grouped":  # per member state (vmapped): a None member is skipped in either form
        _, state = update(_grads(3, params, missing=("a",)), state, params)
        assert jax.tree.structure(state) == structure
    elif _has_shared(state):
        with pytest.raises(NoneGradientError, match=r"\['a'\].*per_leaf_scalars"):
            update(_grads(3, params, missing=("a",)), state, params)
    # Per-leaf form: any gradient pattern, one compilation per pattern, same structure.
    state = ol.per_leaf_scalars(tx.init(params))
    structure = jax.tree.structure(state)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p))  # a fresh function: its own jit cache
    for i, missing in enumerate([("b",), ("b",), (), ("a", "c"), ("b",)]):
        _, state = update(_grads(i, params, missing), state, params)
        assert jax.tree.structure(state) == structure
    assert update._cache_size() == 3  # one per distinct gradient structure, none for the state


def test_shared_form_refuses_a_partial_gradient_tree_in_scan_with_the_fix():
    tx = ol.adam(0.01)
    params = dict(PARAMS)

    def body(state, g):
        u, state = tx.update({"a": g, "b": None, "c": jnp.ones((3, 2))}, state, params)
        return state, None

    with pytest.raises(NoneGradientError, match=r"leaf \['b'\] is None.*per_leaf_scalars\(tx.init\(params\)\)"):
        jax.lax.scan(body, tx.init(params), jnp.ones((2, 2, 3)))
    state, _ = jax.lax.scan(body, ol.per_leaf_scalars(tx.init(params)), jnp.ones((2, 2, 3)))
    assert state[0].step.tolist() == [2, 0, 2]


def test_multisteps_with_none_gradients_matches_torch_accumulation(x64):
    """MultiSteps(k=2) over a None pattern: a leaf without gradient in both micro-batches is
    skipped; one with a gradient in either is stepped with the sum / k (torch's `.grad` sum of
    `(loss / k).backward()` passes)."""
    params = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
    tx = ol.MultiSteps(ol.adam(0.1), 2)
    state = ol.per_leaf_scalars(tx.init(jax.tree.map(jnp.asarray, params)))
    tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    topt = torch.optim.Adam(list(tparams.values()), lr=0.1)
    p = jax.tree.map(jnp.asarray, params)
    update = jax.jit(tx.update)
    patterns = [("b",), ("b",), ("b",), (), ("c",), ("a", "c"), ("a", "b", "c"), ("a", "b", "c")]
    for i, missing in enumerate(patterns):
        g = _grads(i, params, missing)
        g = {k: None if v is None else v.astype(jnp.float64) for k, v in g.items()}
        u, state = update(g, state, p)
        p = ol.apply_updates(p, u)
        for k, v in g.items():
            if v is not None:
                t = torch.tensor(np.asarray(v)) / 2
                tparams[k].grad = t if tparams[k].grad is None else tparams[k].grad + t
        if i % 2 == 1:
            topt.step()
            topt.zero_grad()
            for k in params:
                np.testing.assert_allclose(np.asarray(p[k]), tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Property test against torch.
# ---------------------------------------------------------------------------------------------

SETTINGS = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SHAPES = [(2,), (3,), (2, 3), (3, 2), (1,), (2, 2)]


@st.composite
def runs(draw, matrix_only: bool):
    """A params tree (2-4 leaves) and 4-6 steps, each with a set of leaves without gradient."""
    n = draw(st.integers(2, 4))
    shapes = [s for s in SHAPES if len(s) == 2] if matrix_only else SHAPES
    tree_shapes = {f"p{i}": draw(st.sampled_from(shapes)) for i in range(n)}
    steps = draw(st.integers(4, 6))
    # Runs of equal patterns, so that the scan variant scans several steps with one structure.
    patterns = []
    while len(patterns) < steps:
        missing = frozenset(draw(st.lists(st.sampled_from(sorted(tree_shapes)), max_size=n - 1)))
        patterns += [missing] * draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    return tree_shapes, patterns[:steps], seed


def _torch_trajectory(config, params, grads_seq):
    tparams = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in params.items()}
    opt = config.reference([tparams[k] for k in sorted(tparams)])
    out = []
    for grads in grads_seq:
        for k, g in grads.items():
            tparams[k].grad = None if g is None else torch.tensor(np.asarray(g))
        opt.step()
        out.append({k: v.detach().numpy().copy() for k, v in tparams.items()})
    return out


def _grad_sequence(tree_shapes, patterns, seed):
    rng = np.random.default_rng(seed)
    return [{k: None if k in missing else rng.standard_normal(s) for k, s in sorted(tree_shapes.items())}
            for missing in patterns]


def _check(config, data, mode):
    tree_shapes, patterns, seed = data
    rng = np.random.default_rng(seed + 1)
    params = {k: jnp.asarray(rng.standard_normal(s)) for k, s in sorted(tree_shapes.items())}
    grads_seq = _grad_sequence(tree_shapes, patterns, seed)
    expected = _torch_trajectory(config, params, grads_seq)
    tx = config.functional()
    state = ol.per_leaf_scalars(tx.init(params))
    got = []
    if mode == "jit":
        update = jax.jit(tx.update)
        p = params
        for grads in grads_seq:
            u, state = update({k: None if g is None else jnp.asarray(g) for k, g in grads.items()}, state, p)
            p = ol.apply_updates(p, u)
            got.append(p)
    else:  # scan over each run of equal None patterns
        p, i = params, 0
        while i < len(grads_seq):
            j = i
            while j < len(grads_seq) and patterns[j] == patterns[i]:
                j += 1
            present = [k for k in sorted(tree_shapes) if k not in patterns[i]]
            xs = {k: jnp.asarray(np.stack([grads_seq[t][k] for t in range(i, j)])) for k in present}

            def body(carry, g, present=present):
                p, s = carry
                full = {k: g.get(k) for k in sorted(tree_shapes)}
                u, s = tx.update(full, s, p)
                p = ol.apply_updates(p, u)
                return (p, s), p

            (p, state), traj = jax.lax.scan(body, (p, state), xs)
            got += [jax.tree.map(lambda x, t=t: x[t], traj) for t in range(j - i)]
            i = j
    for step, (mine, theirs) in enumerate(zip(got, expected)):
        for k in sorted(tree_shapes):
            rtol = config.info.rtol32 or 1e-10  # a record's rtol32 holds in float64 too (optim_db)
            np.testing.assert_allclose(np.asarray(mine[k]), theirs[k], rtol=rtol, atol=rtol * 1e-2,
                                       err_msg=f"{config.id} {mode} step {step} leaf {k}")


# lax.scan over the same steps under `slow` (its trace is jit's; the default run takes jit)
@pytest.mark.parametrize("mode", ["jit", pytest.param("scan", marks=pytest.mark.slow)])
@pytest.mark.parametrize("config", [pytest.param(c, id=c.id, marks=c.marks) for c in CONFIGS])
def test_none_gradients_at_random_steps_match_the_reference(config, mode, x64):
    @SETTINGS
    @given(runs(config.matrix_only))
    def prop(data):
        _check(config, data, mode)

    prop()
