"""torchao 0.18's low-bit Adam family as functional optimizers: `adam8bit`, `adamw8bit`,
`adam4bit`, `adamw4bit`, `adam_fp8`, `adamw_fp8` (torchao.optim.Adam8bit, AdamW8bit, Adam4bit,
AdamW4bit, AdamFp8, AdamWFp8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optax_like.core import validation as v
from optax_like.optimizers._timm import check_compared
from optax_like.core.hyperparams import integer_args
from optax_like.core.base import EmptyState, GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.quantized_adam import check_block_size, scale_by_quantized_adam

__all__ = ["adam4bit", "adam8bit", "adam_fp8", "adamw4bit", "adamw8bit", "adamw_fp8"]


def _refuse_bf16_stochastic_round() -> GradientTransformation:
    """torchao rounds bfloat16 params stochastically with torch's RNG when asked; that is not
    reproduced: refused at `init` for a bfloat16 param (a no-op for other dtypes, as in torchao)."""

    def init(params):
        if any(jnp.dtype(getattr(p, "dtype", jnp.float32)) == jnp.bfloat16 for p in jax.tree.leaves(params)):
            raise NotImplementedError("bf16_stochastic_round=True with bfloat16 params is not supported")
        return EmptyState()

    return GradientTransformation(init, lambda updates, state, params=None: (updates, state))


def _quantized_adam(lr, betas, eps, weight_decay, amsgrad, *, block_size, bf16_stochastic_round,
                    is_adamw, bits) -> GradientTransformation:
    """torchao's `_AdamBase.__init__` checks (its messages; no weight_decay check), then its
    `single_param_adam` (`transforms.scale_by_quantized_adam` with the learning rate: the whole
    float32 step, coupled decay for Adam*, decoupled for AdamW*)."""
    # torchao compares each value with a number as it is (`0.0 <= lr`): a Tensor of several
    # elements raises torch's RuntimeError there
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    check_compared(eps)
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    v.check_pair(betas, "betas", "(beta1, beta2)")
    for i in (0, 1):
        check_compared(betas[i])
        v.check(betas[i], f"betas[{i}]", v.in_unit_interval, f"Invalid beta parameter at index {i}: {{}}")
    v.check_hyperparam(weight_decay, "weight_decay")
    check_block_size(block_size, bits)
    decay = v.maybe_nonzero(weight_decay)
    return chain(
        *([_refuse_bf16_stochastic_round()] if bf16_stochastic_round else []),
        scale_by_quantized_adam(betas[0], betas[1], eps, amsgrad, bits=bits, block_size=block_size,
                                learning_rate=lr, weight_decay=weight_decay if decay else None,
                                decoupled=is_adamw),
    )


_DOC = """torchao.optim.{cls} (torchao 0.18) as a functional optimizer: Adam{w} with {what}
    moments in blocks of `block_size` values (see `transforms.quantized_adam`).

    torch-like counterpart: `torchao.optim.{cls}(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay={wd}, amsgrad=False, *, block_size={bs}, bf16_stochastic_round=False)`. Params
    with fewer than 4096 values or a size `block_size` does not divide keep plain moments, as in
    torchao. Differences: `block_size` must be a positive int (torchao fails at the first
    step for 0 and does not check the rest){even}; `bf16_stochastic_round=True` with a bfloat16 param
    raises NotImplementedError at `init` (torchao draws torch random numbers); the update is
    the change of torchao's float32 step `p_new - p`, which `apply_updates` adds back (an ulp
    of |p| off torchao's in-place `p.copy_(p_f32)` only where p_new and p are more than a
    factor 2 apart).
    torchao 0.18 raises at the first step with `amsgrad=True` for a quantized state
    (`torch.maximum` is not implemented for its subclasses); here it keeps the max of the
    dequantized `exp_avg_sq`, quantized with the unsigned map.
    """


@integer_args("block_size")
def adam8bit(lr: ScalarOrSchedule = 1e-3, betas=(0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
             weight_decay: ScalarOrSchedule = 0, amsgrad: bool = False, *, block_size: int = 256,
             bf16_stochastic_round: bool = False) -> GradientTransformation:
    return _quantized_adam(lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                           bf16_stochastic_round=bf16_stochastic_round, is_adamw=False, bits=8)


@integer_args("block_size")
def adamw8bit(lr: ScalarOrSchedule = 1e-3, betas=(0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
              weight_decay: ScalarOrSchedule = 1e-2, amsgrad: bool = False, *, block_size: int = 256,
              bf16_stochastic_round: bool = False) -> GradientTransformation:
    return _quantized_adam(lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                           bf16_stochastic_round=bf16_stochastic_round, is_adamw=True, bits=8)


@integer_args("block_size")
def adam4bit(lr: ScalarOrSchedule = 1e-3, betas=(0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
             weight_decay: ScalarOrSchedule = 0, amsgrad: bool = False, *, block_size: int = 128,
             bf16_stochastic_round: bool = False) -> GradientTransformation:
    return _quantized_adam(lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                           bf16_stochastic_round=bf16_stochastic_round, is_adamw=False, bits=4)


@integer_args("block_size")
def adamw4bit(lr: ScalarOrSchedule = 1e-3, betas=(0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
              weight_decay: ScalarOrSchedule = 1e-2, amsgrad: bool = False, *, block_size: int = 128,
              bf16_stochastic_round: bool = False) -> GradientTransformation:
    return _quantized_adam(lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                           bf16_stochastic_round=bf16_stochastic_round, is_adamw=True, bits=4)


@integer_args("block_size")
def adam_fp8(lr: ScalarOrSchedule = 1e-3, betas=(0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
             weight_decay: ScalarOrSchedule = 0, amsgrad: bool = False, *, block_size: int = 256,
             bf16_stochastic_round: bool = False) -> GradientTransformation:
    return _quantized_adam(lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                           bf16_stochastic_round=bf16_stochastic_round, is_adamw=False, bits="fp8")


@integer_args("block_size")
def adamw_fp8(lr: ScalarOrSchedule = 1e-3, betas=(0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
              weight_decay: ScalarOrSchedule = 1e-2, amsgrad: bool = False, *, block_size: int = 256,
              bf16_stochastic_round: bool = False) -> GradientTransformation:
    return _quantized_adam(lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                           bf16_stochastic_round=bf16_stochastic_round, is_adamw=True, bits="fp8")


for _fn, _cls, _w, _what, _wd, _bs, _even in (
    (adam8bit, "Adam8bit", "", "8-bit (dynamic-map)", 0, 256, ""),
    (adamw8bit, "AdamW8bit", "W", "8-bit (dynamic-map)", 1e-2, 256, ""),
    (adam4bit, "Adam4bit", "", "4-bit", 0, 128, "\n    (4-bit: a quantized param with an odd number of values is refused at `init`; torchao\n    fails at its first step)"),
    (adamw4bit, "AdamW4bit", "W", "4-bit", 1e-2, 128, "\n    (4-bit: a quantized param with an odd number of values is refused at `init`; torchao\n    fails at its first step)"),
    (adam_fp8, "AdamFp8", "", "float8_e4m3fn", 0, 256, ""),
    (adamw_fp8, "AdamWFp8", "W", "float8_e4m3fn", 1e-2, 256, ""),
):
    _fn.__doc__ = _DOC.format(cls=_cls, w=_w, what=_what, wd=_wd, bs=_bs, even=_even)
del _fn, _cls, _w, _what, _wd, _bs, _even
