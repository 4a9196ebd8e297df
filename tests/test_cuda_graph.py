"""One gradient step as one CUDA graph (merlion_core/models/cuda_graph.py).

On the CPU: the wrapper is a plain call, algorithms report ``eager``, and the host-side step
count of PLAS (the one algorithm whose step branches on the host) still drives its phases. On a
GPU (skipped without one: these need CUDA): every registered algorithm and the MERLION encoder,
trained with graphs, end on the same weights as the same training without them.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from merlion_core.algos.registry import ALGORITHMS, LATENT_ALGORITHMS, make_algorithm
from merlion_core.data.collect import collect
from merlion_core.data.sampler import BatchSampler
from merlion_core.models.cuda_graph import CapturedStep, fresh_generator, make_capturable
from merlion_core.representation import merlion

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device; this machine has none")


@pytest.fixture(scope="module")
def dataset():
    return collect("maze", "medium", 0.5, 3000, seed=0, env_overrides={"n_actuators": 6})


def small_config(name: str, **overrides):
    config_cls, _ = ALGORITHMS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    hidden: dict[str, object] = {
        key: (32, 32) for key in ("hidden", "hidden_vae", "hidden_actor", "hidden_critic") if key in fields
    }
    if "vae_warmup" in fields:
        hidden["vae_warmup"] = 5  # PLAS: both phases within the test's steps
    if "action_factors" in fields:
        hidden["action_factors"] = (2,) * 6  # DecQN: the 64-action maze's actuators
    return config_cls(**{**hidden, **overrides})


def external_rep(dataset):
    from merlion_core.representation import external

    return external.fit(dataset, external.ExternalConfig(env="merlion/Maze-v0"), device="cpu")[0]


def test_captured_step_on_cpu_is_a_plain_call():
    calls = []

    def step(inputs):
        calls.append(inputs["x"])
        return {"y": inputs["x"] * 2}

    wrapped = CapturedStep(step, torch.device("cpu"))
    for i in range(5):
        assert wrapped({"x": torch.tensor(float(i))})["y"] == 2 * i
    assert len(calls) == 5 and wrapped.status == "eager" and not wrapped.captured
    with pytest.raises(ValueError, match="warmup"):
        CapturedStep(step, torch.device("cpu"), warmup=0)


def test_a_failed_capture_falls_back_and_refreshes_generators(dataset):
    agent = make_algorithm(
        "cql",
        dataset.n_actions,
        dataset.obs_dim,
        small_config("cql"),
        device="cpu",
        representation=external_rep(dataset),
    )
    old = agent.generator
    expected = torch.rand(4, generator=fresh_generator(old))
    step = CapturedStep(lambda inputs: inputs, torch.device("cpu"), on_failure=agent._fresh_generators)
    step._give_up(RuntimeError("operation not permitted when stream is capturing\nmore"))
    assert step.status == (
        "eager (CUDA graph capture failed: RuntimeError: operation not permitted when stream is capturing)"
    )
    assert agent.generator is not old and torch.equal(torch.rand(4, generator=agent.generator), expected)
    assert not step.enabled and step({"x": torch.ones(1)})["x"] == 1  # eager from now on


def test_make_capturable_sets_every_group():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    opt = make_capturable(torch.optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.1}]))
    assert [g["capturable"] for g in opt.param_groups] == [True, True]
    # a checkpoint written without graphs restores capturable=False groups: setting it again works
    plain = torch.optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.1}])
    sum(p.sum() for p in params).backward()
    plain.step()
    opt.load_state_dict(plain.state_dict())
    assert [g["capturable"] for g in opt.param_groups] == [False, False]
    make_capturable(opt)
    assert [g["capturable"] for g in opt.param_groups] == [True, True]
    assert all(float(opt.state[p]["step"]) == 1.0 for p in params)


def test_algorithms_on_cpu_run_eagerly(dataset):
    agent = make_algorithm("dcql", dataset.n_actions, dataset.obs_dim, small_config("dcql"), device="cpu")
    agent.update(BatchSampler(dataset, 16, seed=0).sample())
    assert agent.step_mode == "eager"
    assert not any(g.get("capturable") for g in agent.optimizer.param_groups)


def test_plas_phases_follow_the_host_step_count(dataset):
    agent = make_algorithm("plas", dataset.n_actions, dataset.obs_dim, small_config("plas"), device="cpu")
    sampler = BatchSampler(dataset, 16, seed=0)
    actor_target = [p.detach().clone() for p in agent.actor_target.parameters()]
    phases, keys = [], []
    for _ in range(7):
        phases.append(agent.graph_phase())
        keys.append("critic_loss" in agent.update(sampler.sample()))
    assert phases == [True] * 5 + [False] * 2  # vae_warmup = 5
    assert keys == [False] * 5 + [True] * 2
    assert int(agent.step) == 7 and agent._steps_done == 7
    moved = any(
        not torch.equal(a, b.detach()) for a, b in zip(actor_target, agent.actor_target.parameters(), strict=True)
    )
    assert moved  # target updates began after the warm-up


@needs_cuda
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_graph_steps_match_eager_steps(name, dataset):
    rep = external_rep(dataset) if name in LATENT_ALGORITHMS else None
    agents = {}
    for graph in (False, True):
        agent = make_algorithm(
            name, dataset.n_actions, dataset.obs_dim, small_config(name), device="cuda", representation=rep
        )
        agent.cuda_graph = graph
        sampler = BatchSampler(dataset, 32, seed=0, device="cuda")
        losses = [agent.update(sampler.sample())["loss"] for _ in range(12)]
        agents[graph] = (agent, losses)
    (eager, eager_losses), (graphed, graph_losses) = agents[False], agents[True]
    assert eager.step_mode == "eager"
    assert graphed.step_mode.startswith("graph") and "failed" not in graphed.step_mode, graphed.step_mode
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-4)
    for (key, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), key
    obs = dataset.observations[:64]
    assert (eager.act(obs) == graphed.act(obs)).mean() >= 0.95


@needs_cuda
def test_merlion_encoder_graph_steps_match_eager(dataset):
    config = merlion.MerlionConfig(dim=3, steps=12, log_every=4, seed=0)
    reps, curves = {}, {}
    for graph in (False, True):
        rep = merlion.build(config, dataset.n_actions, dataset.obs_dim)
        curves[graph] = [
            m["encoder_loss"] for _, m in merlion.train_steps(rep, dataset, config, device="cuda", cuda_graph=graph)
        ]
        reps[graph] = rep
    assert reps[True].step_mode == "graph" and reps[False].step_mode == "eager"
    assert curves[True] == pytest.approx(curves[False], rel=1e-3, abs=1e-5)
    for (key, a), b in zip(reps[False].state_dict().items(), reps[True].state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5), key
