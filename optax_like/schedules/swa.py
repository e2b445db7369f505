"""SWALR: anneal each group's lr to a constant SWA lr (torch.optim.swa_utils.SWALR)."""

from __future__ import annotations

from optax_like.schedules._common import make_schedule


def linear_anneal(t, ops=None):
    return t


def cosine_anneal(t, ops):
    return (1 - ops.cos(ops.pi * t)) / 2


def anneal_fn(strategy):
    return cosine_anneal if strategy == "cos" else linear_anneal


def swa_progress(ops, step, anneal_epochs):
    """torch's `t = max(0, min(1, step / max(1, anneal_epochs)))`."""
    return ops.maximum(0, ops.minimum(1, step / max(1, anneal_epochs)))


def swa_interpolate(swa_lr, lr, alpha):
    """torch's `swa_lr * alpha + lr * (1 - alpha)`."""
    return swa_lr * alpha + lr * (1 - alpha)


def check_swalr(anneal_strategy, anneal_epochs):
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")


def swa_lr(lr, swa_lr, anneal_epochs: int = 10, anneal_strategy: str = "cos"):
    """torch.optim.swa_utils.SWALR: `swa_lr * alpha(n) + lr * (1 - alpha(n))`, with
    `alpha = anneal(min(1, n / max(1, anneal_epochs)))` (cos: `(1 - cos(pi t)) / 2`; linear: t).

    torch's class recovers the pre-annealing lr from `group['lr']` at each step (a recursion
    whose closed form this is, to ~1e-15). With `anneal_epochs=0` torch jumps to `swa_lr` at
    construction (count 0): so does this.
    """
    check_swalr(anneal_strategy, anneal_epochs)
    anneal = anneal_fn(anneal_strategy)
    target = swa_lr

    def formula(ops, n):
        step = ops.maximum(1, n) if anneal_epochs == 0 else n
        alpha = anneal(swa_progress(ops, ops.as_float(step), anneal_epochs), ops)
        return swa_interpolate(target, lr, alpha)

    return make_schedule(formula, lr)


__all__ = ["swa_lr"]
