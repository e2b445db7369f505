"""schedulefree 1.4.1's optimizers as torch-style classes: `AdamWScheduleFree`, `SGDScheduleFree`,
`RAdamScheduleFree` (`optax_like.optim.<name>`), over the functional `optax_like.schedule_free_*`.

    opt = optax_like.optim.AdamWScheduleFree(params, lr=1e-3, warmup_steps=100)
    opt.train()                      # before training, as schedulefree requires
    loss = opt.step(loss_fn, batch)  # the params are y
    opt.eval()                       # before evaluating or saving: the params are x

What schedulefree's classes have beyond `torch.optim.Optimizer`, with its semantics:

- `train()` / `eval()` move each group's params between y (train mode, what steps update) and
  x (eval mode): `p.lerp_(z, 1 - beta1)` / `p.lerp_(z, 1 - 1/beta1)` for each param that has a
  `z` (has stepped), with the group's beta1 (`betas[0]`, or SGD's `momentum`) at the call,
  computed in float64 on the host and rounded once to the param's dtype, as torch's `lerp_`
  takes a Python weight. Each group's `train_mode` flag says where it is; a group already there
  is left alone. A group added by `add_param_group` starts with `train_mode=False`, as there.
- `step()` with `param_groups[0]['train_mode']` False raises schedulefree's `Exception`
  ("Optimizer was not in train mode when step is called. ...") before the closure runs.
- The group-level state (`k`, `weight_sum`, `lr_max`, `scheduled_lr`) lives in `param_groups`
  (the state type's declared group entries, optim/optimizer.py): `state_dict()` has
  schedulefree's layout (`state[id] = {'z', 'exp_avg_sq'}`, those entries and `train_mode` in
  `param_groups`), loads schedulefree's state dicts and loads into schedulefree's classes.
  schedulefree's `train()`/`eval()` read `self.state[p]` of every param of a group they move
  (a defaultdict): a param without state then has an empty entry, `state[id] = {}`; so here.

`ScheduleFreeWrapper(base, ...)` (schedulefree's wrapper over any optimizer here): its options
(`momentum`, `weight_decay_at_y`, `r`, `weight_lr_power`) are attributes read at each step,
`train()` and `eval()` (an edit recompiles once); its `param_groups` are the base's, the same list
and dicts (schedulefree's wrapper is no torch Optimizer: a loop attaches its LR scheduler to the
base, or edits `base.param_groups`, and the wrapper's next step reads them); after wrapping,
`base` is a view of the wrapper (`state_dict()`, `load_state_dict()`, `zero_grad()`, `state`,
`defaults`, ... are the wrapper's, as there: optim/wrappers.py's `_TakenOver`, as for every
wrapper), and `base.step()` raises (schedulefree's steps the base alone at y).

Not schedulefree's: `optimizer.defaults` holds the constructor's arguments only (schedulefree's
also lists `k`, `train_mode`, ...: here they are the groups' entries); `r` and
`weight_lr_power` are compile-time options (a new value recompiles once), so that the
averaging weights are computed as schedulefree's float64 host math. schedulefree's AdamW and
RAdam steps overwrite `p.grad` in place with the normalised gradient (`grad.div_(denom)`, then
`+ weight_decay * y`; SGD's adds the decay likewise), which ours does not mirror: our gradients
are consumed by the step, and nothing reads them after it.
"""

from __future__ import annotations

from typing import Any, cast

import jax

from optax_like import registry as _registry
from optax_like.optim import _state_dict
from optax_like.optim.adahessian import AdahessianOptimizer
from optax_like.optim.optimizer import Optimizer, make_optimizer_class
from optax_like.optim.wrappers import WrapperOptimizer
from optax_like.optimizers.schedule_free import schedule_free_wrapper
from optax_like.transforms.schedule_free import schedule_free_eval_params, schedule_free_train_params

__all__ = ["AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree", "ScheduleFreeOptimizer", "ScheduleFreeWrapper"]

_NOT_IN_TRAIN_MODE = ("Optimizer was not in train mode when step is called. "
                      "Please insert .train() and .eval() calls on the "
                      "optimizer. See documentation for details.")

# The lerps of `.eval()` / `.train()`, one jitted call per group; the params are donated (they
# move in place, as torch's `p.lerp_`). beta1 is static: its float64 host math is exact.
_to_x = jax.jit(schedule_free_eval_params, static_argnames=("beta1",), donate_argnums=(1,))
_to_y = jax.jit(schedule_free_train_params, static_argnames=("beta1",), donate_argnums=(1,))


class ScheduleFreeModes(Optimizer):
    """What schedulefree's classes and its wrapper share: `train()`, `eval()`, the step guard and
    the empty `state[p]` entries of visited params. Where the mode lives and which beta1 moves
    the params are the subclass's (`_in_train_mode`, `_set_train_mode`, `_beta1`)."""

    # ids of the params `train()`/`eval()` have visited (schedulefree's empty `state[p]` entries)
    _visited: frozenset = frozenset()

    def _in_train_mode(self, group: dict) -> bool:
        raise NotImplementedError

    def _set_train_mode(self, group: dict, value: bool) -> None:
        raise NotImplementedError

    def _beta1(self, group: dict) -> float:
        raise NotImplementedError

    def _move(self, to_train: bool) -> None:
        for group, record in zip(self._own_groups(), self._groups):
            if self._in_train_mode(group) == to_train:
                continue
            beta1 = self._beta1(group)
            params = record.treedef.unflatten(record.leaves)
            moved = (_to_y if to_train else _to_x)(record.state, params, beta1=beta1)
            record.leaves = tuple(record.treedef.flatten_up_to(moved))
            self._set_train_mode(group, to_train)
            self._visited = self._visited | frozenset(record.ids)

    def eval(self) -> None:
        """schedulefree's `eval()`: each group in train mode moves its params to x."""
        self._move(False)

    def train(self) -> None:
        """schedulefree's `train()`: each group in eval mode moves its params to y."""
        self._move(True)

    def _live_state(self) -> dict:
        """Per-param state; a visited param without state has schedulefree's empty entry."""
        out = super()._live_state()
        if not self._visited:
            return out
        return {pid: out.get(pid, {}) for record in self._groups for pid in record.ids
                if pid in out or pid in self._visited}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # torch keeps the loaded entries, empty ones included: those params count as visited
        id_map, _ = self._saved_to_current_ids([dict(g) for g in state_dict["param_groups"]])
        self._visited = frozenset(id_map[k] for k in state_dict["state"] if k in id_map)

    def _step(self, closure=None, *args, **kwargs):
        if not self._in_train_mode(self.param_groups[0]):
            raise Exception(_NOT_IN_TRAIN_MODE)
        return super()._step(closure, *args, **kwargs)


class ScheduleFreeOptimizer(ScheduleFreeModes):
    """The base of the schedule-free classes: each group's `train_mode` flag (see the module
    docstring) and its beta1 (`betas[0]`, or SGD's `momentum`)."""

    def _in_train_mode(self, group: dict) -> bool:
        return bool(group["train_mode"])

    def _set_train_mode(self, group: dict, value: bool) -> None:
        group["train_mode"] = value

    def _beta1(self, group: dict) -> float:
        value = group["betas"][0] if "betas" in self.defaults else group["momentum"]
        return float(_state_dict.plain(value))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict) and "train_mode" not in param_group:
            param_group = {**param_group, "train_mode": False}  # schedulefree's default
        super().add_param_group(param_group)


class ScheduleFreeWrapper(ScheduleFreeModes, WrapperOptimizer):
    """schedulefree's `ScheduleFreeWrapper(base, weight_decay_at_y=0.0, momentum=0.9,
    weight_lr_power=2, r=0)` (1.4.1) over any optax_like.optim optimizer (see
    `optax_like.schedule_free_wrapper` for the recursion).

    As schedulefree's: the options are attributes of the wrapper, read at each step (compile-time
    values here: the averaging weights are its float64 host math; a new value recompiles once and
    the run continues with schedulefree's numbers), the mode is one `train_mode` attribute
    (False at construction: call `train()` before stepping, `eval()` before evaluating or
    saving), `eval()`/`train()` move every param that has a `z` with `p.lerp_(z, 1 - 1/momentum)`
    / `p.lerp_(z, 1 - momentum)`, the wrapper's `param_groups` are the base's (the same list and
    dicts: a scheduler attached to `base`, or an edit of `base.param_groups`, reaches the next
    step; `base` becomes a view of the wrapper, see optim/wrappers.py; its `step()` raises), and
    `state_dict()` is the base's with `z` per param and `k`, `lr_max`, `weight_sum` in each group
    (it loads into schedulefree's wrapper around the same torch optimizer, and back). Not
    schedulefree's: those group entries are there from construction (schedulefree adds them at
    the first step, with the same values). A base whose `lr` is a schedule, or a D-Adaptation
    base (`d`), is not supported (schedulefree reads `group['lr'] * group.get('d', 1)`)."""

    _wrap = staticmethod(schedule_free_wrapper)
    _constant_options = ("weight_decay_at_y", "momentum", "weight_lr_power", "r")
    _shared = ("lr",)
    # Adahessian: its step takes the Hessian probes (`hessian=`), which the wrapper's functional
    # step does not pass on (refused here rather than failing at the first step)
    _refused = (ScheduleFreeOptimizer, AdahessianOptimizer)
    _base_step_note = ("schedulefree's base.step() steps the base alone at y, outside the schedule-free "
                       "average; not supported here.")

    def __init__(self, base: Optimizer, weight_decay_at_y: float = 0.0, momentum: float = 0.9,
                 weight_lr_power: float = 2, r: float = 0) -> None:
        self.weight_decay_at_y, self.momentum, self.weight_lr_power, self.r = (
            weight_decay_at_y, momentum, weight_lr_power, r)
        self.train_mode = False
        self._take_over(base, {})

    @property
    def base(self) -> Optimizer:
        """schedulefree's `wrapper.base`: the optimizer wrapped, now a view of the wrapper (its
        `param_groups`, `state_dict()`, ... are the wrapper's; `step()` raises)."""
        return cast(Optimizer, self._base)

    def _in_train_mode(self, group: dict) -> bool:
        return bool(self.train_mode)

    def _set_train_mode(self, group: dict, value: bool) -> None:
        pass  # one flag for every group: set by `_move` once all have moved

    def _beta1(self, group: dict) -> float:
        return float(self.momentum)

    def _move(self, to_train: bool) -> None:
        if bool(self.train_mode) != to_train:
            super()._move(to_train)
            self.train_mode = to_train


def _from_registry(cls_name: str) -> type:
    info = _registry.by_class(cls_name)
    doc = (f"`{info.reference}` over `optax_like.{info.name}` (see its docstring), with schedulefree's "
           "`train()`/`eval()` (optax_like/optim/schedule_free.py).")
    return make_optimizer_class(cls_name, info.factory, doc=doc, base=ScheduleFreeOptimizer, **info.adapter)


AdamWScheduleFree = _from_registry("AdamWScheduleFree")
SGDScheduleFree = _from_registry("SGDScheduleFree")
RAdamScheduleFree = _from_registry("RAdamScheduleFree")
