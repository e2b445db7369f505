"""What the four ports share: torch weights as a dict keyed by torch's names, and the printout."""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np


def parser(doc: str, steps: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps to run (both programs)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    return p


def torch_params(module, dtype) -> dict:
    """`{name: array}` from a torch module, in torch's registration order (a dict: JAX orders
    its leaves by sorted key; the optimizer's ids follow that order, names stay torch's)."""
    return {k: jnp.array(v.detach().numpy(), dtype, copy=True) for k, v in module.named_parameters()}  # a copy: torch updates in place


def max_rel_diff(ours, theirs) -> float:
    """max |ours - torch| / max |torch| over a trajectory (relative to its scale)."""
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) if a.size else 0.0


def report(name: str, columns: dict[str, tuple[list, list]], quiet: bool = False) -> float:
    """Prints each (torch, ours) trajectory side by side; returns the largest relative difference."""
    worst = 0.0
    for title, (theirs, ours) in columns.items():
        diff = max_rel_diff(ours, theirs)
        worst = max(worst, diff)
        if not quiet:
            print(f"{name}: {title}")
            print(f"  {'step':>4}  {'torch':>24}  {'optax_like':>24}")
            for i, (t, o) in enumerate(zip(theirs, ours)):
                print(f"  {i:>4}  {float(t):>24.17g}  {float(o):>24.17g}")
    print(f"{name}: max relative difference over {len(columns)} trajectories: {worst:.3g}")
    return worst
