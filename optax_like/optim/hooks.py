"""torch.optim's optimizer hooks: `RemovableHandle`, the global step hooks every optimizer runs
(`register_optimizer_step_pre_hook`/`_post_hook`) and each optimizer's own registries
(`OptimizerHooks`, a base of `Optimizer`: `register_step_pre_hook`, `register_state_dict_*`,
`register_load_state_dict_*`), called in torch's order."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

__all__ = ["OptimizerHooks", "RemovableHandle", "register_optimizer_step_post_hook",
           "register_optimizer_step_pre_hook"]


class RemovableHandle:
    """A handle that removes a registered hook (torch.utils.hooks.RemovableHandle's surface)."""

    _next_id = itertools.count()

    def __init__(self, hooks_dict: "OrderedDict[int, Callable]"):
        self.hooks_dict = hooks_dict
        self.id = next(RemovableHandle._next_id)

    def remove(self) -> None:
        self.hooks_dict.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


_global_optimizer_pre_hooks: "OrderedDict[int, Callable]" = OrderedDict()
_global_optimizer_post_hooks: "OrderedDict[int, Callable]" = OrderedDict()


def _register(hooks: "OrderedDict[int, Callable]", hook: Callable, prepend: bool = False) -> RemovableHandle:
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


def register_optimizer_step_pre_hook(hook: Callable) -> RemovableHandle:
    """A pre hook `hook(optimizer, args, kwargs) -> None | (args, kwargs)` for every optimizer."""
    return _register(_global_optimizer_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable) -> RemovableHandle:
    """A post hook `hook(optimizer, args, kwargs) -> None` for every optimizer."""
    return _register(_global_optimizer_post_hooks, hook)


class OptimizerHooks:
    """Each optimizer's hook registries (torch's attribute names) and torch's register_* methods."""

    if TYPE_CHECKING:
        step: Callable[..., Any]  # the optimizer's (the class this mixes into)

    def _init_hooks(self) -> None:
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()

    def _has_step_hooks(self) -> bool:
        return bool(_global_optimizer_pre_hooks or self._optimizer_step_pre_hooks
                    or self._optimizer_step_post_hooks or _global_optimizer_post_hooks)

    def _step_with_hooks(self, step: Callable, args: tuple, kwargs: dict) -> Any:
        """`step(*args, **kwargs)` after the global and own pre hooks (which may replace args and
        kwargs), then the own and global post hooks: torch's order."""
        for pre_hook in itertools.chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{self.step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        out = step(*args, **kwargs)
        for post_hook in itertools.chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        return _register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        return _register(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        return _register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        return _register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        return _register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        return _register(self._optimizer_load_state_dict_post_hooks, hook, prepend)
