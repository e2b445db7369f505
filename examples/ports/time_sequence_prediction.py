"""pytorch/examples time_sequence_prediction/train.py (LSTM + LBFGS with a closure), ported.

torch's closure (`zero_grad(); loss = criterion(seq(input), target); loss.backward(); return
loss`) becomes a pure loss function given to `optimizer.step(loss_fn, input, target)`, which
evaluates it as often as torch's LBFGS calls its closure, in one jitted call, and returns the
loss at the step's starting params (and, since this loss_fn returns `(loss, aux)`, the
predictions of that evaluation as aux: no second forward pass for the metrics). The LSTM cells
are written out with torch's gate layout and weights, the time loop is a `lax.scan`. Smaller
than the original (fewer, shorter sequences, 12 hidden units), so that it runs in seconds.

Agreement: the first loss to an ulp; LBFGS's 20 inner iterations per step amplify the ulp-level
differences of the LSTM's tanh/exp between XLA and torch, so after 4 steps (80 evaluations)
float64 params agree to ~2e-10 relative (measured), float32 only to a few percent.

    .venv/bin/python -m examples.ports.time_sequence_prediction --steps 4
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

import optax_like
from examples.ports._common import parser, report, torch_params

HIDDEN, N, L, T = 12, 6, 60, 20


class Sequence(torch.nn.Module):  # train.py's model (51 -> HIDDEN units, no `future`)
    def __init__(self):
        super().__init__()
        self.lstm1 = torch.nn.LSTMCell(1, HIDDEN)
        self.lstm2 = torch.nn.LSTMCell(HIDDEN, HIDDEN)
        self.linear = torch.nn.Linear(HIDDEN, 1)

    def forward(self, input):
        outputs = []
        h_t = torch.zeros(input.size(0), HIDDEN, dtype=input.dtype)
        c_t = torch.zeros(input.size(0), HIDDEN, dtype=input.dtype)
        h_t2 = torch.zeros(input.size(0), HIDDEN, dtype=input.dtype)
        c_t2 = torch.zeros(input.size(0), HIDDEN, dtype=input.dtype)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            outputs += [self.linear(h_t2)]
        return torch.cat(outputs, dim=1)


def lstm_cell(p, prefix, x, h, c):  # port: torch.nn.LSTMCell (gates i, f, g, o)
    gates = x @ p[f"{prefix}.weight_ih"].T + p[f"{prefix}.bias_ih"] + h @ p[f"{prefix}.weight_hh"].T + p[f"{prefix}.bias_hh"]
    i, f, g, o = jnp.split(gates, 4, axis=1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def sequence(p, input):
    zeros = jnp.zeros((input.shape[0], HIDDEN), input.dtype)

    def step(carry, input_t):
        h, c, h2, c2 = carry
        h, c = lstm_cell(p, "lstm1", input_t[:, None], h, c)
        h2, c2 = lstm_cell(p, "lstm2", h, h2, c2)
        return (h, c, h2, c2), (h2 @ p["linear.weight"].T + p["linear.bias"])[:, 0]

    _, outputs = jax.lax.scan(step, (zeros, zeros, zeros, zeros), input.T)
    return outputs.T


def loss_fn(p, input, target):  # port: the closure, as a pure function; predictions as aux
    out = sequence(p, input)
    return jnp.mean((out - target) ** 2), out


def main(argv=None) -> float:
    args = parser(__doc__, 4).parse_args(argv)
    tdtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(2)
    x = np.arange(L)[None, :] + rng.integers(-4 * T, 4 * T, (N, 1))
    data = np.sin(x / 1.0 / T).astype(args.dtype)
    input, target = data[:, :-1], data[:, 1:]
    torch.manual_seed(0)
    seq = Sequence().to(tdtype)

    with jax.enable_x64(args.dtype == "float64"):
        params = torch_params(seq, args.dtype)

        # torch: train.py's loop
        criterion = torch.nn.MSELoss()
        optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8)
        t_input, t_target = torch.tensor(input), torch.tensor(target)
        t_loss = []
        for _ in range(args.steps):
            def closure():
                optimizer.zero_grad()
                loss = criterion(seq(t_input), t_target)
                loss.backward()
                return loss

            t_loss.append(optimizer.step(closure).item())
        t_evals = optimizer.state[optimizer.param_groups[0]["params"][0]]["func_evals"]

        # port
        optimizer = optax_like.optim.LBFGS(params, lr=0.8)
        j_input, j_target = jnp.asarray(input), jnp.asarray(target)
        o_loss = []
        for _ in range(args.steps):
            loss, predictions = optimizer.step(loss_fn, j_input, j_target)
            o_loss.append(loss)
        o_evals = optimizer.state_dict()["state"][0]["func_evals"]
        final = optimizer.params
    names = [n for n, _ in seq.named_parameters()]
    print(f"closure evaluations: torch {t_evals}, port {o_evals}")
    return report("time_sequence_prediction (LSTM + LBFGS closure)", {
        "loss": (t_loss, [float(v) for v in o_loss]),
        "final params": (np.concatenate([p.detach().numpy().ravel() for p in seq.parameters()]),
                         np.concatenate([np.asarray(final[n]).ravel() for n in names])),
    }, quiet=args.quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
