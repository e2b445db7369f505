"""timm.optim.Adahessian as a functional optimizer."""

from __future__ import annotations

from optax_like.core import gradients, hyperparams
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.transforms.adahessian import scale_by_adahessian
from optax_like.transforms.combine import chain
from optax_like.transforms.weight_decay import add_decoupled_weight_decay


@hyperparams.integer_args("update_each", "n_samples")
def adahessian(
    lr: ScalarOrSchedule = 0.1,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    hessian_power: ScalarOrSchedule = 1.0,
    update_each: int = 1,
    n_samples: int = 1,
    avg_conv_kernel: bool = False,
) -> GradientTransformationExtraArgs:
    """AdaHessian (Yao et al., 2021) as timm.optim.Adahessian (timm 1.0.31) computes it:

        h   <- mean over n_samples Rademacher probes z of z * (H z)   (each update_each steps per
               param, or when it has no estimate yet; else the stale estimate is kept)
        h   <- broadcast(mean(|h|, dims 2, 3))                        (avg_conv_kernel, 4-D params)
        p   <- p * (1 - lr * weight_decay)
        m_t  = beta1 m + (1 - beta1) g;   v_t = beta2 v + (1 - beta2) h^2
        p   <- p - lr / (1 - beta1^t) * m_t / ((v_t / (1 - beta2^t)) ** (hessian_power / 2) + eps)

    The update needs the Hessian: `tx.update(grads, state, params, value_fn=loss_fn)` with
    `loss_fn(params)` the loss whose gradient `grads` is (`grads=None`: computed from it; see
    `scale_by_adahessian`, and
    `optax_like.hutchinson` for the estimate alone):

        tx = optax_like.adahessian(lr=0.1, weight_decay=1e-4)
        state = optax_like.per_leaf_scalars(tx.init(params))
        loss, grads = optax_like.value_and_grad(loss_fn, none_if_unreached=True)(params)
        updates, state = tx.update(grads, state, params, value_fn=loss_fn)

    (`none_if_unreached`: None for a param the loss does not reach, which is then skipped, as
    timm skips `p.grad is None`; `grads=None` does the same. Such a None needs the per-leaf step
    counters of `per_leaf_scalars`: the shared ones `init` gives raise a NoneGradientError naming
    the leaf.)

    Chain: `scale_by_adahessian -> [add_decoupled_weight_decay]` (the decay block emits
    `p * c + u`: timm decays the param first). The probes come from a JAX PRNG key in the state,
    seeded with timm's seed 2147483647 (`scale_by_adahessian(seed=...)`): JAX's numbers, not torch's generator's. timm
    counterpart: `timm.optim.Adahessian(params, lr=0.1, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0.0, hessian_power=1.0, update_each=1, n_samples=1, avg_conv_kernel=False)`,
    whose checks and messages these are (update_each and n_samples: positive ints here, which
    timm does not check: 0 fails at its first step, a ZeroDivisionError or, with no probe, a
    TypeError). lr, betas, eps, weight_decay and hessian_power may be schedules.
    """
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    check_compared(eps)
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    v.check_pair(betas, "betas", "(beta1, beta2)")
    for i in (0, 1):  # timm's order: each compared, then checked
        check_compared(betas[i])
        v.check(betas[i], f"betas[{i}]", v.in_unit_interval, f"Invalid beta parameter at index {i}: {{}}")
    check_compared(hessian_power)
    v.check(hessian_power, "hessian_power", lambda x: 0.0 <= x <= 1.0, "Invalid Hessian power value: {}")
    v.check_hyperparam(weight_decay, "weight_decay")
    for value, name in ((update_each, "update_each"), (n_samples, "n_samples")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    step = scale_by_adahessian(lr, betas[0], betas[1], eps, hessian_power, update_each=update_each,
                               n_samples=n_samples, avg_conv_kernel=avg_conv_kernel)
    inner = chain(step, *([add_decoupled_weight_decay(lr, weight_decay)] if v.maybe_nonzero(weight_decay) else []))

    def update(updates, state, params=None, **extra_args):
        if updates is None and extra_args.get("value_fn") is not None and params is not None:
            # LBFGS's convention: value_fn's gradients; None for a param it does not reach (timm's
            # `p.grad is None`: skipped; the state then needs per-leaf scalars, `per_leaf_scalars`)
            updates = gradients.grad(extra_args["value_fn"], none_if_unreached=True)(params)
        return inner.update(updates, state, params, **extra_args)  # pyright: ignore[reportArgumentType]

    return GradientTransformationExtraArgs(inner.init, update)
