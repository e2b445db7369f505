"""The four ports of examples/ports/ run beside torch and agree with it (float64)."""

import importlib

import pytest

pytest.importorskip("flax")

# (module, arguments, largest relative difference allowed over every printed trajectory)
PORTS = [
    ("mnist", ["--steps", "8"], 1e-13),
    ("imagenet", ["--steps", "12"], 1e-13),
    ("finetune", ["--steps", "8"], 1e-13),
    # LBFGS amplifies the ulp-level differences of the LSTM's tanh/exp (3.5e-14 after one step,
    # 7e-13 after two, 2e-10 after four: measured).
    ("time_sequence_prediction", ["--steps", "2"], 1e-11),
]


# imagenet (about 5 s) stays in the default run; the others take 13-20 s each on 2 shared cores.
@pytest.mark.parametrize("name, argv, tolerance", [
    pytest.param(*port, marks=() if port[0] == "imagenet" else pytest.mark.slow) for port in PORTS
], ids=[p[0] for p in PORTS])
def test_port_matches_torch_in_float64(name, argv, tolerance, capsys):
    module = importlib.import_module(f"examples.ports.{name}")
    worst = module.main(argv + ["--quiet"])
    assert worst < tolerance
    assert "max relative difference" in capsys.readouterr().out


@pytest.mark.slow
def test_finetune_port_in_float32_agrees_to_float32_rounding(capsys):
    module = importlib.import_module("examples.ports.finetune")
    assert module.main(["--steps", "3", "--dtype", "float32", "--quiet"]) < 1e-5
