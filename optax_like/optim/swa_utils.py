"""torch.optim.swa_utils.SWALR for any optimizer object with `param_groups`.

(torch's AveragedModel / update_bn are model utilities, not schedulers: not here.)
"""

from __future__ import annotations

import warnings
from typing import Any

from optax_like.optim.lr_scheduler import LRScheduler, _format_param
from optax_like.schedules import swa as _swa
from optax_like.schedules._common import HOST

__all__ = ["SWALR"]


class SWALR(LRScheduler):
    """Anneals each group's lr to its `swa_lr` over `anneal_epochs` (cos or linear), then holds it.

    torch's recursion: at each step the pre-annealing lr is recovered from `group['lr']`
    (`(lr - alpha_prev * swa_lr) / (1 - alpha_prev)`) and re-interpolated with the new alpha, so a
    hand edit of `group['lr']` is carried along as in torch. The anneal functions and the
    interpolation are `optax_like.schedules.swa`'s (shared with `swa_lr`).
    """

    def __init__(self, optimizer, swa_lr: float, anneal_epochs=10, anneal_strategy: str = "cos",
                 last_epoch=-1) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        for lr, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = lr
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list:
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self.anneal_func(_swa.swa_progress(HOST, step - 1, self.anneal_epochs))
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha) for group in self.optimizer.param_groups]
        alpha = self.anneal_func(_swa.swa_progress(HOST, step, self.anneal_epochs))
        return [_swa.swa_interpolate(group["swa_lr"], lr, alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)]

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        fn = _swa.anneal_fn(anneal_strategy)
        self.anneal_func = lambda t: fn(t, HOST)

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
