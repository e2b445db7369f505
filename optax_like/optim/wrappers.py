"""Optimizers that wrap another optimizer instance: timm's `Lookahead(base_optimizer, alpha, k)`
(here) and schedulefree's `ScheduleFreeWrapper(base, ...)` (optim/schedule_free.py).

    base = optax_like.optim.AdamW(params, lr=1e-3)
    optimizer = optax_like.optim.Lookahead(base, alpha=0.5, k=6)

A wrapper class here is a thin view of a functional wrapper (`optax_like.lookahead(base_tx,
...)`): the wrapped instance is an optimizer of a class derived from both the wrapper and the
base's class (`isinstance(optimizer, Lookahead)` and `isinstance(optimizer, AdamW)` hold), whose
factory is the base's factory composed with the functional wrapper, whose arguments become
param-group entries (timm's `lookahead_alpha`, `lookahead_k`), and whose state is the functional
wrapper's: the base's state plus the wrapper's declared entries (timm's
`lookahead_slow_buff`, `lookahead_step`), so `state_dict()` has timm's layout. The wrapper
takes over the base's param groups, their hyperparameters, params and state as they are at the
call (one step of the wrapper then continues the base's run).

The base after wrapping (`_TakenOver`, every wrapper): the references share the base's
`param_groups` (timm's Lookahead: `self.param_groups = base_optimizer.param_groups`, and its
`defaults`; schedulefree's wrapper reads `self.base.param_groups`), and a loop may keep using
the base: attach its LR scheduler to it, edit `base.param_groups[i]['lr']`, save
`base.state_dict()`. So the wrapper's `param_groups` are the base's list and dicts (an edit
through either reaches the wrapper's next step), and `base` becomes a view of the wrapper: its
`state_dict()` (the wrapper's, as timm's `Lookahead.state_dict()` is the base's),
`load_state_dict()`, `zero_grad()`, `add_param_group()`, `backward()`, `params`, `grad`, `state`
and `defaults` are the wrapper's; each step of the wrapper marks the base as stepped for an LR
scheduler attached to it (the references' step calls `base.step()`). `base.step()` itself is the
reference's where the wrapper can run it (timm's Lookahead: the base steps alone, see
`Lookahead`), else a RuntimeError naming the wrapper (schedulefree's).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, cast

import jax
import jax.numpy as jnp

from optax_like.core import hyperparams, numerics
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support
from optax_like.optim import _state_dict, _step
from optax_like.optim.optimizer import Optimizer, _live_optimizers
from optax_like.transforms.lookahead import lookahead, lookahead_sync

__all__ = ["Lookahead"]

_derived_classes: dict = {}


@functools.partial(jax.jit, static_argnums=(3,), donate_argnums=(1,))  # the params, as a step does
def _sync(state: Any, params: Any, alpha: jax.Array, present: tuple[bool, ...]):
    """`lookahead_sync` for the params whose flat positions are `present`: one compile per
    structure and presence; `alpha` traced (a group edit does not recompile)."""
    leaves, treedef = jax.tree.flatten(params, is_leaf=lambda x: x is None)
    grads = treedef.unflatten([leaf if keep else None for leaf, keep in zip(leaves, present)])
    return lookahead_sync(state, params, grads, alpha=alpha)


def _composed_factory(base_factory: Callable, wrap: Callable, entries: dict[str, str], integer: tuple,
                      shared: tuple, constants: tuple) -> Callable:
    """`base_factory`'s arguments plus the group `entries` (`{option: entry}`: keyword-only, with
    `wrap`'s defaults); builds `wrap(base_factory(**base_args), option=entry value, ...,
    **shared base args, **constants)`. Integer arguments of both stay compile-time constants
    (`hyperparams.integer_args`)."""
    signature = inspect.signature(base_factory)
    wrap_defaults = {k: p.default for k, p in inspect.signature(wrap).parameters.items()}
    fixed = dict(constants)

    def factory(**kwargs):
        own = {option: kwargs.pop(entry) for option, entry in entries.items() if entry in kwargs}
        own.update({name: kwargs[name] for name in shared})
        return wrap(base_factory(**kwargs), **own, **fixed)

    params = list(signature.parameters.values()) + [
        inspect.Parameter(entry, inspect.Parameter.KEYWORD_ONLY, default=wrap_defaults[option])
        for option, entry in entries.items()]
    factory.__signature__ = signature.replace(parameters=params)  # pyright: ignore[reportFunctionMemberAccess]
    factory.__name__ = f"{wrap.__name__}_of_{getattr(base_factory, '__name__', 'optimizer')}"
    base_integers = tuple(getattr(base_factory, hyperparams._INTEGER_ARGS, ()))
    return hyperparams.integer_args(*base_integers, *integer)(factory)


def _base_alone(wrap: Callable) -> Callable:
    """`wrap`'s transform as the base's own `step()` runs it after wrapping (timm's `base.step()`
    steps the base alone): `wrap(base, ...)`'s init and state (its `.base` is the base's state),
    updated by the base alone: the params take the base's update and `state.base` its new state;
    the wrapper's own state (timm's `lookahead_slow_buff`, `lookahead_step`) is kept."""

    @functools.wraps(wrap)
    def alone(base: GradientTransformation, *args: Any, **kwargs: Any) -> GradientTransformation:
        wrapped = wrap(base, *args, **kwargs)  # (its validation and its init)
        base_update = with_extra_args_support(base).update  # (Adahessian's hessian=)

        def update(updates, state, params=None, **extra_args):
            updates, base_state = base_update(updates, state.base, params, **extra_args)
            return updates, state._replace(base=base_state)

        return GradientTransformationExtraArgs(wrapped.init, update)

    alone.__name__ = f"{wrap.__name__}_base_alone"
    return alone


def _derived_class(cls: type, base_cls: type, constants: tuple) -> type:
    """The class of `cls` over a `base_cls` instance with the `_constant_options` values
    `constants` (`((option, value), ...)`): one per combination, so one compile each."""
    key = (cls, base_cls, constants)
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"{cls.__name__}'s options {', '.join(k for k, _ in constants)} are compile-time "
                        f"constants and must be hashable (Python numbers), got {dict(constants)!r}") from None
    if key not in _derived_classes:
        factory = _composed_factory(base_cls._factory, cls._wrap, cls._entries, cls._integer_entries,
                                    cls._shared, constants)
        alone = None if not cls._base_steps_alone else staticmethod(_composed_factory(
            base_cls._factory, _base_alone(cls._wrap), cls._entries, cls._integer_entries, cls._shared, constants))
        _derived_classes[key] = type(cls.__name__, (cls, base_cls), {
            "_factory": staticmethod(factory), "_base_alone_factory": alone, "_base_class": base_cls,
            "_constant_values": constants, "__module__": "optax_like.optim", "__doc__": cls.__doc__})
    return _derived_classes[key]


class _TakenOver(Optimizer):
    """The class of a base optimizer once a wrapper took it over (derived from this and the
    base's class: `isinstance(base, SGD)` still holds; see the module docstring). Its
    `param_groups` are the wrapper's (the same list and dicts: an LR scheduler attached to the
    base, or `base.param_groups[i]['lr'] = ...`, reaches the wrapper's next step, as in timm's
    Lookahead and schedulefree's wrapper, which share them); `state_dict()`, `load_state_dict()`,
    `zero_grad()`, `add_param_group()`, `backward()`, `params`, `grad`, `state` and `defaults`
    are the wrapper's. `step()` runs the wrapper's `_step_base_alone` (the base alone, where the
    reference's `base.step()` does that and the wrapper can; else a RuntimeError). Its own step
    hooks stay its own (they run around `base.step()`)."""

    _wrapper: Any
    _opt_called = False  # an LR scheduler's mark of a step (optim/lr_scheduler.py): set by the wrapper's

    def _wrapped_error(self) -> RuntimeError:
        return RuntimeError(f"this {type(self).__name__} is wrapped by a {type(self._wrapper).__name__}, which "
                            "holds its params, state and param groups now: use the wrapper")

    @property
    def _groups(self):  # every other path to the base's own (stale) params and state
        raise self._wrapped_error()

    def _step(self, closure=None, *args, **kwargs):
        return self._wrapper._step_base_alone(closure, *args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return self._wrapper.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._wrapper.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._wrapper.zero_grad(set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._wrapper.add_param_group(param_group)

    def backward(self, grads: Any) -> None:
        self._wrapper.backward(grads)

    @property
    def params(self) -> Any:
        return self._wrapper.params

    @params.setter
    def params(self, value: Any) -> None:
        self._wrapper.params = value

    @property
    def grad(self) -> Any:
        return self._wrapper.grad

    @grad.setter
    def grad(self, value: Any) -> None:
        self._wrapper.grad = value

    @property
    def state(self) -> dict[Any, Any]:
        return self._wrapper.state

    @property
    def defaults(self) -> dict[str, Any]:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The wrapper's (timm's Lookahead: `self.defaults = base_optimizer.defaults`, one dict)."""
        return self._wrapper.defaults


_taken_over_classes: dict = {}


def _view_of(base: Optimizer, wrapper: Optimizer) -> _TakenOver:
    """Makes `base` a view of `wrapper` (`_TakenOver`): its group dicts become the wrapper's, in
    the base's list and dicts (references to them stay live), its own records are dropped."""
    for theirs, mine in zip(base.param_groups, wrapper.param_groups):
        theirs.clear()
        theirs.update(mine)
    wrapper.param_groups = base.param_groups
    cls = type(base)
    if cls not in _taken_over_classes:
        _taken_over_classes[cls] = type(cls.__name__, (_TakenOver, cls), {"__module__": cls.__module__})
    base.__class__ = _taken_over_classes[cls]
    view = cast(_TakenOver, base)
    for name in ("_groups", "defaults"):  # (the class's properties now)
        vars(view).pop(name, None)
    view._wrapper = wrapper
    _live_optimizers.discard(view)  # (clip_grad_norm_(params) looks the params up among live optimizers)
    return view


class WrapperOptimizer(Optimizer):
    """The base of wrapper classes: `Wrapper(base_optimizer, **options)` returns an instance of
    `type(Wrapper.__name__, (Wrapper, type(base_optimizer)), ...)` (see the module docstring).

    Subclasses set `_wrap` (the functional wrapper, `wrap(base_tx, **options)`), and say where
    each option lives: `_entries` (`{option: group entry}`, traced per group as the base's
    hyperparameters, e.g. timm's `{"alpha": "lookahead_alpha"}`; `_integer_entries`: those that
    are compile-time integers) or `_constant_options` (compile-time values of the instance,
    kept as its attributes: schedulefree's wrapper keeps `momentum`, `r`, ... as attributes,
    not in the groups, and reads them at each step; a new value recompiles once, see
    `__setattr__`). `_shared`: base arguments `_wrap` also takes (schedulefree's wrapper
    reads the base group's `lr`). `_refused`: base classes it cannot wrap (besides LBFGS and
    other wrappers).

    `_take_over(base, options)` makes `base` a view of the wrapper (`_TakenOver`, see the module
    docstring); the wrapper's steps mark it stepped for an LR scheduler attached to it.
    `_base_steps_alone`: whether `base.step()` then steps the base alone (the params take the
    base's update, the wrapper's own state is kept: timm's Lookahead, whose `base.step()` does
    that), a jitted step of its own (`_base_alone`); False: `base.step()` raises, with the
    reference's behaviour in `_base_step_note`."""

    _wrap: Callable = None  # pyright: ignore[reportAssignmentType]
    _entries: dict[str, str] = {}
    _integer_entries: tuple[str, ...] = ()
    _constant_options: tuple[str, ...] = ()
    _shared: tuple[str, ...] = ()
    _refused: tuple[type, ...] = ()
    _base_class: type = None  # pyright: ignore[reportAssignmentType]
    _constant_values: tuple = ()  # a derived class's `((option, value), ...)`
    _base_steps_alone = False
    _base_step_note = ""  # what the reference's `base.step()` does, when refused here
    _base_alone_factory: Callable | None = None  # a derived class's, with `_base_steps_alone`
    _base: _TakenOver | None = None  # the optimizer wrapped, a view of this one (see `_take_over`)
    _stepping_base_alone = False  # during a `base.step()` (see `_run_step`)

    def __new__(cls, base_optimizer: Any = None, *args: Any, **kwargs: Any):
        if cls._base_class is not None:  # a derived class (deepcopy, or a subclass's own call)
            return object.__new__(cls)
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f"{cls.__name__} wraps an optax_like.optim optimizer instance, got "
                            f"{type(base_optimizer).__name__}")
        from optax_like.optim.lbfgs import LBFGS

        if isinstance(base_optimizer, _TakenOver):
            raise base_optimizer._wrapped_error()
        if isinstance(base_optimizer, (WrapperOptimizer, LBFGS, *cls._refused)):
            # LBFGS: its step runs its own rule over one global state; a wrapper of a wrapper:
            # not composed here
            raise TypeError(f"{cls.__name__} cannot wrap a {type(base_optimizer).__name__}")
        bound = inspect.signature(cls.__init__).bind(None, base_optimizer, *args, **kwargs)
        bound.apply_defaults()
        constants = tuple((k, bound.arguments[k]) for k in cls._constant_options)
        return object.__new__(_derived_class(cls, type(base_optimizer), constants))

    def __setattr__(self, name: str, value: Any) -> None:
        """A `_constant_options` attribute set to a new value moves the instance to the derived
        class of the new values (its factory): the next step recompiles once and rebuilds the
        groups' state through the state_dict mapping, as for an edited compile-time group option
        (`Optimizer._refresh_specs`). A value that cannot be one (unhashable) is refused, the
        attribute unchanged."""
        if name in self._constant_options and self._base_class is not None:
            constants = tuple((k, value if k == name else v) for k, v in self._constant_values)
            wrapper_class = type(self).__bases__[0]  # (a derived class's: the wrapper's, the base's)
            derived = _derived_class(wrapper_class, self._base_class, constants)
            if derived is not type(self):
                object.__setattr__(self, "__class__", derived)
                self._hyper_cache = None
        super().__setattr__(name, value)

    def _take_over(self, base: Optimizer, options: dict[str, Any]) -> None:
        """Builds this optimizer over `base`'s groups (their params as they are now, in base's
        structure and mode) with the `_entries` `options` as new group entries (the others are
        in the factory), then moves base's state in."""
        entries = {self._entries[k]: v for k, v in options.items() if k in self._entries}
        defaults = {**base.defaults, **entries}
        records = base._groups
        groups = []
        for group, record in zip(base.param_groups, records):
            tree = record.treedef.unflatten(record.leaves)
            given = {k: v for k, v in group.items() if k not in ("params", "param_names") and (
                k in base.defaults or k not in (record.entries or ()))}  # not the base state's entries
            if record.named:
                tree = list(zip(record.names, [leaf for leaf in record.leaves if leaf is not None]))
            groups.append({"params": tree, **given, **entries})
        model = base.params if base._mode == "model" else None
        params: Any = groups if base._mode != "tree" else groups[0]["params"]
        Optimizer.__init__(self, params, defaults, model=model, skip_nonfinite=base.skip_nonfinite)
        if base._mode == "tree":
            self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        for record, own, group in zip(records, self._groups, self.param_groups):
            own.state = own.state._replace(base=record.state)
            # the same leaves in the same order: why the base's order was JAX's (the arrays' listing
            # is not remembered for the stepped arrays), and how a helper ordered its groups
            own.order_issue, own.group_order = record.order_issue, record.group_order
            if own.entries is not None:  # the group entries of the moved state (timm Lamb's `step`)
                own.entries = _state_dict.export_group_entries(own.state)
                group.update(own.entries)
        self._hyper_cache = None
        self._base = _view_of(base, self)

    def _step(self, closure=None, *args, **kwargs):
        loss = super()._step(closure, *args, **kwargs)
        # the references' step runs `base.step()`: an LR scheduler attached to the base sees it
        # (torch's scheduler marks `_opt_called` in the base's patched step)
        if self._base is not None:
            self._base._opt_called = True
        return loss

    def _step_base_alone(self, closure=None, *args, **kwargs):
        """`base.step(...)` after wrapping (`_TakenOver`): with `_base_steps_alone`, one step of
        the base alone over the wrapper's params, groups and state (`_base_alone`: the base's
        update and state, the wrapper's own state kept; the same arguments as `step()`); else
        a RuntimeError."""
        base_name = type(self._base).__name__
        if not self._base_steps_alone:
            raise RuntimeError(
                f"{base_name}.step(): this optimizer is wrapped by a {type(self).__name__}, whose step() "
                f"steps it: call the wrapper's step(). ({self._base_step_note})")
        self._stepping_base_alone = True
        try:
            return self._step(closure, *args, **kwargs)
        finally:
            self._stepping_base_alone = False

    def _run_step(self, update: Callable, *args: Any, **kwargs: Any):
        if not self._stepping_base_alone:
            return super()._run_step(update, *args, **kwargs)
        # the groups' specs with the base-alone factory, for this step only (same hyperparameters,
        # options and state: the state stays the wrapper's)
        specs = [record.spec for record in self._groups]
        alone = type(self)._base_alone_factory
        try:
            for record, spec in zip(self._groups, specs):
                record.spec = _step.GroupSpec(alone, spec.static_items, spec.hyper_layout, spec.zero_structural,
                                              spec.state_dtypes, spec.stochastic_rounding)
            return super()._run_step(update, *args, **kwargs)
        finally:
            for record, spec in zip(self._groups, specs):
                record.spec = spec


class Lookahead(WrapperOptimizer):
    """timm's `Lookahead(base_optimizer, alpha=0.5, k=6)` (timm.optim.lookahead, 1.0.31) over
    any optax_like.optim optimizer (see `optax_like.lookahead` for the recursion).

    As timm's: the base's param groups gain `lookahead_alpha`, `lookahead_k` and
    `lookahead_step` (editable per group; `lookahead_k` is a compile-time integer here: a new
    value recompiles once); each param's state gains `lookahead_slow_buff` at its first sync;
    `state_dict()` is the base's with those entries (it loads into timm's
    `Lookahead(torch_optimizer)` and back), and a state dict without them (a base optimizer's)
    loads with the group entries kept. timm's validation and messages (at construction).
    `sync_lookahead()` as timm's (`optax_like.lookahead_sync`).

    The base after wrapping, as timm's (see the module docstring): the wrapper's `param_groups`
    and `defaults` are the base's (an LR scheduler attached to the base, or an edit of
    `base.param_groups`, drives the wrapper's next step), `base.state_dict()` is the wrapper's
    (timm's `Lookahead.state_dict()` is the base's, slow buffers and group entries included),
    and `base.step()` steps the base alone: the params take the base's update (timm's fast
    weights), `lookahead_step` and the slow buffers are kept (one more compile, the first time).
    Not timm's: `optimizer.state` is the whole state (timm's Lookahead has an empty `state` of
    its own; the base's holds the entries); hooks stay with the object they were registered on:
    the base's step hooks run around `base.step()` only and its state-dict hooks not at all
    (timm's Lookahead runs the base's inside its `step()` and `state_dict()`, and never its own)."""

    _wrap = staticmethod(lookahead)
    _entries = {"alpha": "lookahead_alpha", "k": "lookahead_k"}
    _integer_entries = ("lookahead_k",)
    _base_steps_alone = True

    def __init__(self, base_optimizer: Optimizer, alpha: float = 0.5, k: int = 6) -> None:
        self._take_over(base_optimizer, {"alpha": alpha, "k": k})

    def sync_lookahead(self) -> None:
        """timm's `sync_lookahead()`: every param with a gradient (timm: `p.grad is not None`:
        the pending ones, or after a `step(closure)` those its loss reaches; after `zero_grad()`,
        none) takes its slow weights now, `slow + alpha * (fast -
        slow)` (the params themselves at a param's first sync), with its group's
        `lookahead_alpha`; the group's `lookahead_step` is unchanged. Typically called after the
        last step of an epoch, before evaluating."""
        reached = self._closure_gradients()  # after a step(closure): the params its loss reaches
        for i, (group, record) in enumerate(zip(self._own_groups(), self._groups)):
            params = record.treedef.unflatten(record.leaves)
            present = tuple(leaf is not None and (g is not None or (reached is not None and reached[i][j]))
                            for j, (leaf, g) in enumerate(zip(record.leaves, record.grads)))
            alpha = jnp.asarray(hyperparams.concrete_value(group["lookahead_alpha"]), numerics.float_dtype())
            new_params, record.state = _sync(record.state, params, alpha, present)
            record.leaves = tuple(record.treedef.flatten_up_to(new_params))
