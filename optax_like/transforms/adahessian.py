"""`scale_by_adahessian`: timm.optim.Adahessian's step (Yao et al., 2021, "ADAHESSIAN: An Adaptive
Second Order Optimizer for Machine Learning"): Adam whose second moment is that of a Hutchinson
estimate of the Hessian's diagonal, `z * (H z)` with Rademacher probes `z`.

The estimate needs Hessian-vector products of the loss, which a gradient does not carry: the
update takes them as an extra argument (`GradientTransformationExtraArgs`), either

    updates, state = tx.update(grads, state, params, value_fn=loss_fn)      # loss_fn(params)

(the transform draws its probes from the PRNG key in its state and differentiates `loss_fn`
twice: `jax.jvp` of `jax.grad`, forward over reverse), or, where the Hessian-vector products
must span more than this transform's params (the adapter's param groups: timm's one
`autograd.grad` over every group),

    probes = adahessian_probes(state, grads, n_samples=..., update_each=..., stream=g)
    updates, state = tx.update(grads, state, params, hessian=hutchinson_estimate(hvp, probes))

with `hvp` the product with the whole model's Hessian (its other params' tangents being their
own transforms' probes). `hutchinson(loss_fn, params, key, n_samples)` is the estimate on its own.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import gradients, numerics
from optax_like.core.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, increment_counts, init_counts, leaf_scalars, select_present
from optax_like.core.torch_layout import FRESH, INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import is_none, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex

SEED = 2147483647  # timm's `self.seed`: its probes' torch.Generator; here the PRNG key's seed


class ScaleByAdahessianState(NamedTuple):
    hessian_step: LeafScalars  # timm's state['hessian step'] (a Python int, set to 0 in timm's __init__)
    step: LeafScalars  # timm's state['step'] (a Python int)
    exp_avg: Any  # first moment of the gradient, params-shaped
    exp_hessian_diag_sq: Any  # second moment of the Hessian estimate, params-shaped
    hess: Any  # the current estimate (timm's `p.hess`, an attribute of the param), compute dtype
    hess_ready: LeafScalars  # 1 once a leaf has an estimate (timm: `p.hess` no longer the float 0.0)
    key: jax.Array  # the PRNG key of the probes (raw uint32 key), split at every update
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdahessianState,
    buffers=("exp_avg", "exp_hessian_diag_sq"),
    scalars={"hessian_step": INT_STEP, "step": INT_STEP},
    # timm saves neither `p.hess` nor its generator: a resumed timm run recomputes the estimate at
    # its next step (`isinstance(p.hess, float)`) and restarts its generator from the seed
    internal={"hess": FRESH, "hess_ready": FRESH, "key": FRESH, "schedule_count": STEPS_TAKEN},
    started="step",
    torch_keys={"hessian_step": "hessian step"},
    always=("hessian_step",),
    attribute_group_entries=("update_each", "n_samples", "avg_conv_kernel"),  # timm's optimizer attributes
)


def _real_compute_dtype(x: Any):
    dtype = jnp.dtype(x.dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    return numerics.compute_dtype(dtype)


def _check_n_samples(n_samples: int) -> None:
    """No probe, no estimate: timm accepts `n_samples=0` and fails at its first step (its
    estimate stays the float 0.0: `addcmul_()` TypeError); refused here, naming the argument."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples}")


def rademacher_probes(key: jax.Array, like: Any, n_samples: int) -> list:
    """`n_samples` trees of Rademacher probes (+-1 with probability 1/2 each) with `like`'s
    structure and shapes, in each leaf's compute dtype (float32 for 16-bit leaves: timm's
    `torch.randint(0, 2, size) * 2.0 - 1.0` is float32); None leaves stay None. Sample `s`,
    leaf `i` (in `like`'s flattening order) draws from `split(fold_in(key, s), n)[i]`: pure."""
    _check_n_samples(n_samples)
    leaves, treedef = jax.tree.flatten(like, is_leaf=is_none)
    out = []
    for s in range(n_samples):
        keys = jax.random.split(jax.random.fold_in(key, s), max(len(leaves), 1))
        out.append(treedef.unflatten([
            None if x is None else jax.random.rademacher(keys[i], jnp.shape(x), jnp.int32).astype(
                _real_compute_dtype(x)) for i, x in enumerate(leaves)]))
    return out


def hessian_vector_product(value_fn: Callable, params: Any) -> Callable:
    """`tangents -> H tangents` for the Hessian of `value_fn` at `params` (forward over reverse:
    `jax.jvp` of `jax.grad`). Tangents are cast to each param's dtype; None leaves stay None."""
    grad_fn = jax.grad(value_fn)

    def hvp(tangents):
        tangents = jax.tree.map(lambda z, p: None if z is None else z.astype(p.dtype), tangents, params,
                                is_leaf=is_none)
        tangents = jax.tree.map(lambda z, p: jnp.zeros_like(p) if z is None else z, tangents, params,
                                is_leaf=is_none)
        return jax.jvp(grad_fn, (params,), (tangents,))[1]

    return hvp


def hutchinson_estimate(hvp: Callable, probes: Sequence[Any]) -> Any:
    """timm's `p.hess += h_z * z / n_samples` over the probes (in their order), from zero: the
    Hutchinson estimate of the Hessian's diagonal, in the probes' dtypes. `hvp(z)` is the
    Hessian-vector product (a tree like `z`); None leaves stay None."""
    n = len(probes)
    total = None
    for z in probes:
        hz = hvp(z)

        def term(h, zz):
            if zz is None:
                return None
            return lax.div(lax.mul(h.astype(zz.dtype), zz), jnp.asarray(n, zz.dtype))

        t = jax.tree.map(term, hz, z, is_leaf=is_none)
        total = t if total is None else jax.tree.map(
            lambda a, b: None if a is None else lax.add(a, b), total, t, is_leaf=is_none)
    return total


def hutchinson(value_fn: Callable, params: Any, key: jax.Array, n_samples: int = 1) -> Any:
    """The Hutchinson estimate of the diagonal of `value_fn`'s Hessian at `params`: the mean
    over `n_samples` Rademacher probes `z` (`rademacher_probes(key, params, n_samples)`) of
    `z * (H z)`, as timm's Adahessian accumulates it (probes in each param's compute dtype)."""
    return hutchinson_estimate(hessian_vector_product(value_fn, params), rademacher_probes(key, params, n_samples))


def _flat(tree: Any, reference: Any) -> list:
    """`tree`'s leaves at `reference`'s leaves (None leaves, or None for a whole subtree, as None)."""
    return jax.tree.structure(reference, is_leaf=is_none).flatten_up_to(tree)


def adahessian_selection(state: ScaleByAdahessianState, updates: Any, update_each: int) -> list:
    """Per leaf of the state's params (non-None), whether this update recomputes its estimate:
    a gradient, and `hessian step % update_each == 0` or no estimate yet (timm's
    `set_hessian`); a traced bool, or False where the gradient is None (static)."""
    grads = [g for g, ref in zip(_flat(updates, state.exp_avg), jax.tree.leaves(state.exp_avg, is_leaf=is_none))
             if ref is not None]
    out = []
    for i, g in enumerate(grads):
        if g is None:
            out.append(False)
            continue
        count, ready = jnp.asarray(state.hessian_step[i]), jnp.asarray(state.hess_ready[i])
        out.append(jnp.logical_or(count % jnp.asarray(update_each, count.dtype) == 0, ready == 0))
    return out


def _step_key(key: jax.Array, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.split(key)[1], stream)


def adahessian_probes(state: ScaleByAdahessianState, updates: Any, *, n_samples: int, update_each: int,
                      stream: int = 0) -> list:
    """The probes the next `update(updates, state, ...)` uses: `n_samples` trees like
    `updates`, Rademacher +-1 (`rademacher_probes` of the state's key, split once per update,
    with `stream` folded in: the adapter's group index, so that groups draw apart) on the
    leaves `adahessian_selection` recomputes, 0 on the others, None where the gradient is None."""
    selection = adahessian_selection(state, updates, update_each)
    probes = rademacher_probes(_step_key(state.key, stream), updates, n_samples)
    out = []
    for z in probes:
        leaves, treedef = jax.tree.flatten(z, is_leaf=is_none)
        present = iter(selection)
        masked = []
        for leaf, ref in zip(leaves, jax.tree.leaves(state.exp_avg, is_leaf=is_none)):
            if ref is None:
                masked.append(None)
                continue
            sel = next(present)
            if leaf is None:
                masked.append(None)
            elif sel is False:
                masked.append(jnp.zeros_like(leaf))
            else:
                masked.append(jnp.where(sel, leaf, jnp.zeros_like(leaf)))
        out.append(treedef.unflatten(masked))
    return out


def _power(x: jax.Array, exponent: Any) -> jax.Array:
    """torch's `x.pow_(exponent)` for a Python-float exponent: its CPU kernel takes `sqrt` for
    0.5 and `pow` otherwise (0 gives ones); a traced exponent chooses in the graph."""
    dtype = x.dtype
    if numerics.is_host_scalar(exponent):
        e = float(exponent)
        return lax.sqrt(x) if e == 0.5 else lax.pow(x, numerics.scalar(e, dtype))
    e = numerics.scalar(exponent, dtype)
    return jnp.where(e == 0.5, lax.sqrt(x), lax.pow(x, e))


def _averaged_kernel(h: jax.Array) -> jax.Array:
    """timm's `avg_conv_kernel` on a 4-D estimate: `|h|.mean(dim=[2, 3], keepdim=True)` expanded."""
    mean = lax.div(jnp.sum(lax.abs(h), axis=(2, 3), keepdims=True), jnp.asarray(h.shape[2] * h.shape[3], h.dtype))
    return jnp.broadcast_to(mean, h.shape)


def scale_by_adahessian(
    lr: ScalarOrSchedule = 0.1,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    hessian_power: ScalarOrSchedule = 1.0,
    *,
    update_each: int = 1,
    n_samples: int = 1,
    avg_conv_kernel: bool = False,
    seed: int = SEED,
) -> GradientTransformationExtraArgs:
    """Adahessian's step without the decay, learning rate included, in timm's order:

        recompute (a gradient and hessian_step % update_each == 0, or no estimate yet):
            h = mean over n_samples probes z of z * (H z)       (else the stale h is kept)
        hessian_step += 1                                          (leaves with a gradient)
        h   <- broadcast(mean(|h|, dims 2, 3))                     (avg_conv_kernel, 4-D leaves)
        t   <- t + 1
        m_t  = b1 m + (1 - b1) g;   v_t = b2 v + (1 - b2) h^2
        d    = (v_t / (1 - b2^t)) ** (hessian_power / 2) + eps
        out  = -(lr / (1 - b1^t)) * m_t / d

    `update(updates, state, params, *, value_fn=None, hessian=None)`: `value_fn(params)` the
    loss (updates=None: its gradient at params is the update's gradient, None for a param it
    does not reach, skipped as timm skips `p.grad is None`, which needs `per_leaf_scalars`
    state; the transform draws
    the probes and computes the products: `jax.jvp` of `jax.grad`,
    skipped by a `lax.cond` at steps where no leaf recomputes), or `hessian` the estimate for
    the probes `adahessian_probes(state, updates, ...)` gives (its leaves that are not
    recomputed are ignored). The probes come from the PRNG key in the state (`seed`, default
    timm's 2147483647; JAX's generator, not torch's: the numbers differ from timm's), split
    once per update. Complex params are refused at init (timm's probes are real: torch's
    autograd refuses them as grad_outputs of complex gradients).
    """
    update_each, n_samples, avg_conv_kernel = int(update_each), int(n_samples), bool(avg_conv_kernel)
    if update_each < 1:
        raise ValueError(f"update_each must be a positive int, got {update_each}")
    _check_n_samples(n_samples)

    def init(params):
        refuse_complex(params, lambda dtype: TypeError(
            f"Adahessian: complex params are not supported (got {jnp.dtype(dtype).name}; timm's real Rademacher "
            "probes cannot be grad_outputs of complex gradients)"))
        # in the compute dtype (float32 for 16-bit params: timm's `h_z * z` with float32 z), sharded as the params
        hess = jax.tree.map(lambda p: None if p is None else zeros_like(p, _real_compute_dtype(p)), params,
                            is_leaf=is_none)
        return ScaleByAdahessianState(
            hessian_step=init_counts(params), step=init_counts(params), exp_avg=zeros_like(params),
            exp_hessian_diag_sq=zeros_like(params), hess=hess,
            hess_ready=leaf_scalars(params, 0, jnp.int32), key=jax.random.PRNGKey(seed),
            schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, *, value_fn=None, hessian=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_adahessian needs the params: call update(updates, state, params, value_fn=...).")
        if (hessian is None) == (value_fn is None):
            raise TypeError(
                "scale_by_adahessian's update needs exactly one of value_fn= (the loss, a function of the params: "
                "its Hessian-vector products give the Hutchinson estimate) or hessian= (the estimate for "
                "adahessian_probes(state, grads, ...))")
        if updates is None:  # LBFGS's convention: the gradients of value_fn at params
            if value_fn is None:
                raise TypeError("scale_by_adahessian: updates=None needs value_fn= (the loss to differentiate)")
            # None for a param value_fn does not reach: skipped, as timm skips `p.grad is None`
            updates = gradients.grad(value_fn, none_if_unreached=True)(params)
        selection = adahessian_selection(state, updates, update_each)
        if hessian is None:
            assert value_fn is not None  # (exactly one of them, checked above)
            probes = adahessian_probes(state, updates, n_samples=n_samples, update_each=update_each)
            hvp = hessian_vector_product(value_fn, params)
            traced = [s for s in selection if s is not False]
            zeros = jax.tree.map(lambda z: None if z is None else jnp.zeros_like(z), probes[0], is_leaf=is_none)
            if traced:
                hessian = lax.cond(jnp.any(jnp.stack(traced)), lambda: hutchinson_estimate(hvp, probes),
                                   lambda: zeros)
            else:
                hessian = zeros

        # the estimate each leaf's step reads: the new one where recomputed, else the stale one
        refs = jax.tree.leaves(state.exp_avg, is_leaf=is_none)
        old = jax.tree.leaves(state.hess, is_leaf=is_none)
        new = _flat(hessian, state.exp_avg)
        grads = _flat(updates, state.exp_avg)
        sel = iter(selection)
        current = []
        for ref, h_old, h_new, g in zip(refs, old, new, grads):
            if ref is None:
                current.append(None)
                continue
            s = next(sel)
            if g is None:
                current.append(h_old)
                continue
            h = h_old if s is False else jnp.where(s, h_new.astype(h_old.dtype), h_old)
            if avg_conv_kernel and h.ndim == 4:
                h = _averaged_kernel(h)
            current.append(h)
        treedef = jax.tree.structure(state.hess, is_leaf=is_none)
        current = treedef.unflatten(current)

        h = hyperparams(state.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, hessian_power=hessian_power)
        wide = numerics.float_dtype()

        def step_scalars(t, dtype):
            neg_step = -(numerics.scalar(h.lr, wide) / numerics.bias_correction(h.b1, t, wide))
            return numerics.cast(neg_step, dtype), numerics.bias_correction(h.b2, t, dtype)

        if numerics.is_host_scalar(h.hessian_power):
            half_power: Any = float(h.hessian_power) / 2
        else:
            half_power = numerics.plain(h.hessian_power) / 2

        def math(leaf, g, m, v, hess, _t, scalars):
            neg_step, bc2 = scalars
            dtype = leaf.dtype
            m = lax.add(lax.mul(m, numerics.scalar(h.b1, dtype)), lax.mul(numerics.one_minus(h.b1, dtype), g))
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), hess), hess))
            denom = lax.add(_power(lax.div(v, bc2), half_power), numerics.scalar(h.eps, dtype))
            return lax.div(lax.mul(neg_step, m), denom), m, v

        new_updates, new_state = per_param_update(state, updates, math, buffers=("exp_avg", "exp_hessian_diag_sq"),
                                                  inputs=(current,), reference=state.exp_avg,
                                                  step_scalars=step_scalars)
        ready = state.hess_ready.map(lambda r: jnp.ones_like(r))
        return new_updates, new_state._replace(
            hessian_step=increment_counts(state.hessian_step, updates, state.exp_avg),
            hess=current,
            hess_ready=select_present(ready, state.hess_ready, updates, state.exp_avg),
            key=jax.random.split(state.key)[0])

    return GradientTransformationExtraArgs(init, update)


__all__ = ["SEED", "ScaleByAdahessianState", "adahessian_probes", "adahessian_selection", "hessian_vector_product",
           "hutchinson", "hutchinson_estimate", "rademacher_probes", "scale_by_adahessian"]
