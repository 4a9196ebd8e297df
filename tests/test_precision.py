"""Mixed precision (models/precision.py): what runs in bf16, what stays fp32, and what one bf16 step changes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_algos_harness import build, dataset, one_torch_thread  # noqa: F401  (fixtures)

from merlion_core.algos.registry import ALGORITHMS
from merlion_core.data.sampler import BatchSampler
from merlion_core.models import precision as precision_module
from merlion_core.models.mlp import compile_networks, compile_status, mlp
from merlion_core.models.obs_features import ObservationFeatures, feature_mlp, feature_mlp_repeated
from merlion_core.models.precision import compute_precision, network_dtype, resolve_precision

BF16_LOSS_RTOL = 0.03
"""Stated tolerance: one gradient step's loss parts in bf16 within 3% (relative) of fp32's, or within
BF16_LOSS_ATOL for parts near zero."""
BF16_LOSS_ATOL = 0.02


def test_resolve_precision_explicit_auto_and_bad(monkeypatch):
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision_module, "cpu_has_bf16_matrix_units", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision_module, "cpu_has_bf16_matrix_units", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision: one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="resolve 'auto'"):
        with compute_precision("auto"):
            pass


def test_scope_sets_and_restores_the_network_dtype():
    assert network_dtype() is None
    with compute_precision("bf16"):
        assert network_dtype() is torch.bfloat16
        with compute_precision("fp32"):
            assert network_dtype() is None
        assert network_dtype() is torch.bfloat16
    assert network_dtype() is None


def test_mlp_runs_in_bf16_inside_the_scope_and_returns_fp32():
    torch.manual_seed(0)
    net = mlp(5, [], 3)  # one Linear: the bf16 result is exactly the linear of the bf16-rounded operands
    x = torch.randn(64, 5)
    layer = net[0]
    expected_bf16 = F.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()).float()
    with compute_precision("bf16"):
        out = net(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected_bf16)
    fp32 = net(x)  # outside the scope: fp32, unlike the bf16 result
    assert torch.equal(fp32, F.linear(x, layer.weight, layer.bias))
    assert not torch.equal(fp32, out)
    # gradients reach the fp32 master weights in fp32
    with compute_precision("bf16"):
        net(x).sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    assert torch.allclose(layer.weight.grad, torch.ones(3, 64) @ x, rtol=0.02)


def test_repeated_feature_mlp_matches_the_plain_one_in_bf16():
    torch.manual_seed(0)
    features = ObservationFeatures(4, 8, 1.0, seed=0)
    net = feature_mlp(features, 2, [32, 32], 1)
    obs, extra = torch.randn(6, 4), torch.randn(6 * 3, 2)
    with compute_precision("bf16"):
        fast = feature_mlp_repeated(net, obs, extra, [3])
        plain = net(torch.cat([obs.repeat_interleave(3, dim=0), extra], -1))
    fp32 = feature_mlp_repeated(net, obs, extra, [3])
    assert fast.dtype == torch.float32
    assert torch.allclose(fast, plain, rtol=0.05, atol=0.02)
    assert not torch.equal(fast, fp32)  # the first layer ran in bf16 too


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_one_bf16_step_stays_within_tolerance_of_fp32(name, dataset):  # noqa: F811
    batch = BatchSampler(dataset, 64, seed=0).sample()
    parts = {}
    for prec in ("fp32", "bf16"):
        agent = build(name, dataset, seed=0)
        agent.precision = prec
        agent.prepare_observation_features(torch.as_tensor(dataset.observations))
        prepare = getattr(agent, "prepare_data", None)
        if prepare is not None:
            prepare(BatchSampler(dataset, 64, seed=0))
        parts[prec] = agent.update(batch)
    assert parts["fp32"].keys() == parts["bf16"].keys()
    for key, value in parts["fp32"].items():
        assert parts["bf16"][key] == pytest.approx(value, rel=BF16_LOSS_RTOL, abs=BF16_LOSS_ATOL), key
    assert parts["bf16"]["loss"] != parts["fp32"]["loss"]  # bf16 really ran


def test_train_agent_and_encoder_record_the_precision(tmp_path):
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.agent import train_agent
    from merlion_core.pipelines.encoder import train_encoder

    data = collect("maze", "medium", 0.5, 2000, seed=0, env_overrides={"n_actuators": 6})
    save_dataset(data, tmp_path / "data")

    def subnormals_flushed() -> bool:
        return (torch.tensor([1e-39]) * 1.0).item() == 0.0

    torch.set_flush_denormal(False)
    result = train_agent(
        tmp_path / "data", "bc", tmp_path / "agent", steps=3, precision="bf16", overrides={"hidden": [16]}, device="cpu"
    )
    assert result["precision"] == "bf16"
    assert json.loads((tmp_path / "agent" / "config.json").read_text())["precision"] == "bf16"
    assert subnormals_flushed()  # the pipelines train with subnormal floats flushed to zero
    torch.set_flush_denormal(False)
    enc = train_encoder(
        tmp_path / "data", "merlion", tmp_path / "enc", overrides={"steps": 3}, device="cpu", precision="fp32"
    )
    assert enc["precision"] == "fp32"
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["precision"] == "fp32"
    assert subnormals_flushed()
    with pytest.raises(ValueError, match="precision: one of"):
        train_agent(tmp_path / "data", "bc", tmp_path / "a2", steps=1, precision="half", device="cpu")


def test_compiled_mlp_matches_eager_and_keeps_its_state_dict():
    torch.manual_seed(0)
    net = mlp(5, [16], 3)
    keys = list(net.state_dict())
    x = torch.randn(8, 5)
    with compute_precision("bf16"):
        eager = net(x)
    assert compile_networks(torch.nn.ModuleList([net])) == 1
    with compute_precision("bf16"):
        compiled = net(x)
    assert compile_status(net) == "compiled"
    assert compiled.dtype == torch.float32
    torch.testing.assert_close(compiled, eager, rtol=1e-2, atol=1e-2)
    assert list(net.state_dict()) == keys


def test_a_compile_failure_falls_back_to_eager_for_good():
    torch.manual_seed(0)
    net = mlp(5, [16], 3)
    x = torch.randn(8, 5)
    expected = net(x)

    def broken(*_):
        raise RuntimeError("inductor: no C++ compiler\nsecond line")

    net._compiled_body = broken
    net.compile_status = "compiled"
    torch.testing.assert_close(net(x), expected)
    assert net._compiled_body is None
    assert compile_status(net) == "eager (compile failed: RuntimeError: inductor: no C++ compiler)"


def test_flush_denormals_makes_subnormal_floats_zero():
    from merlion_core.models.precision import flush_denormals

    try:
        torch.set_flush_denormal(False)  # earlier tests trained through the pipelines, which set it
        tiny = torch.tensor([1e-39])  # subnormal in fp32
        assert (tiny * 1.0).item() > 0
        assert flush_denormals()  # this CPU (x86 with SSE3) supports it
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
