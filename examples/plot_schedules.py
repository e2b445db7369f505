"""Plots every schedule in optax_like.schedules (one PNG each) next to torch's trajectory.

    python examples/plot_schedules.py [--out examples/out] [--steps 300] [--no-torch]

Each figure shows the schedule function evaluated with jit over all counts (solid) and, when
torch is installed, the lr torch's scheduler class produces step by step (dots); cyclic and
one-cycle policies also show their momentum schedule on a second axis.
"""

from __future__ import annotations

import argparse
import os
import warnings

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import optax_like.schedules as S  # noqa: E402

LR = 0.1


def cases(steps):
    """name -> (schedule, torch factory or None)."""
    import torch.optim.lr_scheduler as tls
    import torch.optim.swa_utils as tswa

    third = steps // 3
    return {
        "step_lr": (S.step_lr(LR, 30, 0.5), lambda o: tls.StepLR(o, 30, 0.5)),
        "multi_step_lr": (S.multi_step_lr(LR, [60, 120, 120, 200], 0.5), lambda o: tls.MultiStepLR(o, [60, 120, 120, 200], 0.5)),
        "constant_lr": (S.constant_lr(LR, 0.25, 50), lambda o: tls.ConstantLR(o, 0.25, 50)),
        "linear_lr": (S.linear_lr(LR, 0.1, 1.0, 100), lambda o: tls.LinearLR(o, 0.1, 1.0, 100)),
        "exponential_lr": (S.exponential_lr(LR, 0.99), lambda o: tls.ExponentialLR(o, 0.99)),
        "polynomial_lr": (S.polynomial_lr(LR, 200, 2.0), lambda o: tls.PolynomialLR(o, 200, 2.0)),
        "cosine_annealing_lr": (S.cosine_annealing_lr(LR, third, 0.01), lambda o: tls.CosineAnnealingLR(o, third, 0.01)),
        "cosine_annealing_warm_restarts": (S.cosine_annealing_warm_restarts(LR, 20, 2, 0.005),
                                           lambda o: tls.CosineAnnealingWarmRestarts(o, 20, 2, 0.005)),
        "cyclic_lr": (S.cyclic_lr(0.01, LR, 25, mode="triangular2"), lambda o: tls.CyclicLR(o, 0.01, LR, 25, mode="triangular2")),
        "one_cycle_lr": (S.one_cycle_lr(LR, total_steps=steps), lambda o: tls.OneCycleLR(o, LR, total_steps=steps)),
        "one_cycle_lr_three_phase": (S.one_cycle_lr(LR, total_steps=steps, three_phase=True, anneal_strategy="linear"),
                                     lambda o: tls.OneCycleLR(o, LR, total_steps=steps, three_phase=True,
                                                              anneal_strategy="linear")),
        "lambda_lr": (S.lambda_lr(LR, lambda n: 1.0 / (1.0 + 0.02 * n)), lambda o: tls.LambdaLR(o, lambda n: 1.0 / (1.0 + 0.02 * n))),
        "multiplicative_lr": (S.multiplicative_lr(LR, lambda n: jnp.where(n % 50 == 0, 0.5, 0.999)),
                              lambda o: tls.MultiplicativeLR(o, lambda n: 0.5 if n % 50 == 0 else 0.999)),
        "sequential_lr": (S.sequential_lr([S.linear_lr(LR, 0.05, total_iters=30), S.cosine_annealing_lr(LR, steps - 30)], [30]),
                          lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.05, total_iters=30),
                                                         tls.CosineAnnealingLR(o, steps - 30)], [30])),
        "chained_scheduler": (S.chained_scheduler([S.constant_lr(LR, 0.5, 40), S.exponential_lr(LR, 0.995)]),
                              lambda o: tls.ChainedScheduler([tls.ConstantLR(o, 0.5, 40), tls.ExponentialLR(o, 0.995)])),
        "swa_lr": (S.swa_lr(LR, 0.02, 60), lambda o: tswa.SWALR(o, 0.02, 60)),
    }


def torch_lrs(factory, steps):
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = factory(opt)
        out = [opt.param_groups[0]["lr"]]
        for _ in range(steps):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-torch", action="store_true", help="plot the schedules only")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    counts = jnp.arange(args.steps + 1)
    for name, (schedule, factory) in cases(args.steps).items():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(counts, jax.jit(jax.vmap(schedule))(counts), label=f"optax_like.schedules.{name}")
        if not args.no_torch:
            ax.plot(counts, torch_lrs(factory, args.steps), ".", ms=2.5, color="k", label="torch (class, step by step)")
        ax.set_xlabel("count (scheduler steps)")
        ax.set_ylabel("lr")
        ax.set_title(name)
        momentum = getattr(schedule, "momentum", None)
        if momentum is not None:
            ax2 = ax.twinx()
            ax2.plot(counts, jax.jit(jax.vmap(momentum))(counts), color="tab:orange", lw=1, label="momentum")
            ax2.set_ylabel("momentum", color="tab:orange")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        path = os.path.join(args.out, f"{name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main()
