"""The torch.optim idioms of the docs, ported to optax_like.optim, run beside torch.

Each section prints torch's loss/lr and ours; they agree to float32 rounding.

    .venv/bin/python examples/port_from_torch.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch

import optax_like.optim as optim

rng = np.random.default_rng(0)
W0, B0 = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
X, Y = rng.standard_normal((16, 3)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)


def loss_fn(model, x, y):  # the JAX model: a pytree; the loss gets the whole tree
    return jnp.mean((jnp.tanh(x @ model["base"]) + model["head"] - y) ** 2)


def torch_model():
    return torch.tensor(W0, requires_grad=True), torch.tensor(B0, requires_grad=True)


def torch_loss(w, b):
    return ((torch.tanh(torch.tensor(X) @ w) + b - torch.tensor(Y)) ** 2).mean()


def jax_model():
    return {"base": jnp.asarray(W0), "head": jnp.asarray(B0)}


def show(title, torch_values, our_values):
    print(f"{title}\n  torch: {np.round(torch_values, 6).tolist()}\n  ours:  {np.round(our_values, 6).tolist()}")


# 1 + 2. Per-layer groups (defaults fill the rest) and the plain loop: loss.backward() -> backward(grads).
w, b = torch_model()
topt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 1e-1}], lr=1e-2, momentum=0.9)
model = jax_model()
opt = optim.SGD([{"params": model["base"]}, {"params": model["head"], "lr": 1e-1}], lr=1e-2, momentum=0.9, model=model)
tl, ol = [], []
for _ in range(5):
    topt.zero_grad()
    loss = torch_loss(w, b)
    loss.backward()
    topt.step()
    tl.append(loss.item())
    opt.zero_grad()
    loss, grads = jax.value_and_grad(loss_fn)(opt.params, X, Y)
    opt.backward(grads)
    opt.step()
    ol.append(float(loss))
show("plain loop, per-layer lrs (loss)", tl, ol)

# 3. The closure loop: the closure becomes a pure loss function given to step().
w, b = torch_model()
topt = torch.optim.Adam([w, b], lr=1e-2)
opt = optim.Adam(jax_model(), lr=1e-2)
tl, ol = [], []
for _ in range(5):
    def closure():
        topt.zero_grad()
        loss = torch_loss(w, b)
        loss.backward()
        return loss
    tl.append(topt.step(closure).item())
    ol.append(float(opt.step(loss_fn, X, Y)))
show("closure loop (loss)", tl, ol)

# 4. Edit hyperparameters by hand (no recompilation), 5. add a param group, 6. save/restore.
for group in topt.param_groups:
    group["lr"] = 5e-3
for group in opt.param_groups:
    group["lr"] = 5e-3
extra_t = torch.zeros(2, requires_grad=True)
topt.add_param_group({"params": extra_t, "lr": 1e-3})
opt.add_param_group({"params": jnp.zeros(2), "lr": 1e-3})  # params become [model, extra]
tl, ol = [], []
for _ in range(3):
    def closure():
        topt.zero_grad()
        loss = torch_loss(w, b + extra_t)
        loss.backward()
        return loss
    tl.append(topt.step(closure).item())
    ol.append(float(opt.step(lambda ps, x, y: loss_fn({**ps[0], "head": ps[0]["head"] + ps[1]}, x, y), X, Y)))
show("after lr edit + add_param_group (loss; our lambda per step retraces each step)", tl, ol)
saved = opt.state_dict()  # torch.save(...) it, or convert with optax_like.interop.torch
current = opt.params
restored = optim.Adam([{"params": jax.tree.map(jnp.array, current[0])}, {"params": jnp.array(current[1])}], lr=1.0)
restored.load_state_dict(saved)
print("save/restore: lrs", [g["lr"] for g in restored.param_groups], "steps",
      [float(s["step"]) for s in restored.state.values()])

# 7. Schedulers, stepped once per epoch after the optimizer.
if hasattr(optim, "lr_scheduler"):
    for name, kwargs in [("StepLR", dict(step_size=3, gamma=0.1)), ("ExponentialLR", dict(gamma=0.9))]:
        w, b = torch_model()
        topt = torch.optim.SGD([w, b], lr=0.1)
        opt = optim.SGD(jax_model(), lr=0.1)
        tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
        sched = getattr(optim.lr_scheduler, name)(opt, **kwargs)
        tlr, olr = [], []
        for epoch in range(8):
            topt.zero_grad()
            torch_loss(w, b).backward()
            topt.step()
            opt.step(loss_fn, X, Y)
            tsched.step()
            sched.step()
            tlr.append(tsched.get_last_lr()[0])
            olr.append(float(sched.get_last_lr()[0]))
        show(f"{name} (lr per epoch)", tlr, olr)
    w, b = torch_model()
    topt = torch.optim.SGD([w, b], lr=0.1)
    opt = optim.SGD(jax_model(), lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, "min", patience=1)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, "min", patience=1)
    tlr, olr = [], []
    for epoch in range(8):
        val = 1.0  # a plateau
        tsched.step(val)
        sched.step(val)
        tlr.append(topt.param_groups[0]["lr"])
        olr.append(float(opt.param_groups[0]["lr"]))
    show("ReduceLROnPlateau (lr per epoch)", tlr, olr)
