"""L1 nearest-neighbour lookup (Eq. 1), the latent policy and vectorised online evaluation."""

import json

import numpy as np
import pytest
import torch

from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.evaluation import EvalResult, evaluate, evaluate_behaviour, learning_curve_point
from merlion_core.lookup import l1_nearest
from merlion_core.policy import LatentPolicy, Policy
from merlion_core.representation.base import Representation

SMALL_MAZE = {"n_actuators": 6}


class FakeTable(Representation):
    """State-independent: e(a; s) = table[a]."""

    method = "fake-table"

    def __init__(self, table_AD: torch.Tensor, obs_dim: int = 3) -> None:
        super().__init__(table_AD.shape[0], obs_dim, table_AD.shape[1])
        self.register_buffer("table", table_AD)
        self.calls: list[int] = []

    def embed(self, obs_BS, act_B):
        return self.table[act_B]

    def embed_chunk(self, obs_BS, actions_C):
        self.calls.append(int(actions_C.shape[0]))
        return self.table[actions_C][None].expand(obs_BS.shape[0], -1, -1)


class FakeStateful(Representation):
    """State-dependent: e(a; s) = table[a] * (1 + s) (obs_dim == dim); uses the default embed_chunk."""

    method = "fake-stateful"

    def __init__(self, table_AD: torch.Tensor) -> None:
        super().__init__(table_AD.shape[0], table_AD.shape[1], table_AD.shape[1])
        self.register_buffer("table", table_AD)

    def embed(self, obs_BS, act_B):
        return self.table[act_B] * (1.0 + obs_BS)


def brute_force(query_BD, table_BAD, k):
    """Reference: full distance matrix, order by (distance, index) with numpy's lexsort."""
    dist = (query_BD[:, None, :] - table_BAD).abs().sum(-1).numpy()  # [B, A]
    idx = np.stack([np.lexsort((np.arange(row.size), row))[:k] for row in dist])
    return idx, np.take_along_axis(dist, idx, 1)


def random_case(seed, b=7, a=37, d=5, integer=False):
    g = torch.Generator().manual_seed(seed)
    if integer:  # many exact ties
        table = torch.randint(0, 2, (b, a, d), generator=g).double()
        query = torch.randint(0, 2, (b, d), generator=g).double()
    else:
        table = torch.randn(b, a, d, generator=g, dtype=torch.float64)
        query = torch.randn(b, d, generator=g, dtype=torch.float64)
    return query, table


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [1, 5, 10, 37, 1024])
@pytest.mark.parametrize("integer", [False, True])
def test_table_mode_matches_brute_force(k, chunk, integer):
    query, table = random_case(k + chunk, integer=integer)
    idx, dist = l1_nearest(query, table, k=k, chunk=chunk)
    ref_idx, ref_dist = brute_force(query, table, k)
    assert idx.dtype == torch.int64 and idx.shape == (7, k) and dist.shape == (7, k)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [4, 7, 100])
@pytest.mark.parametrize("integer", [False, True])
def test_representation_mode_matches_brute_force_and_table_mode(k, chunk, integer):
    query, table = random_case(100 + chunk, b=6, a=23, d=4, integer=integer)
    rep = FakeStateful(table[0])
    obs = torch.rand(6, 4, generator=torch.Generator().manual_seed(chunk), dtype=torch.float64).round()
    full = rep.embed_all(obs)
    idx, dist = l1_nearest(query, k=k, representation=rep, obs_BS=obs, chunk=chunk)
    ref_idx, ref_dist = brute_force(query, full, k)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=0, atol=1e-12)
    t_idx, t_dist = l1_nearest(query, full, k=k)
    assert torch.equal(idx, t_idx) and torch.equal(dist, t_dist)


def test_chunked_equals_unchunked_and_table_never_materialised():
    query, table = random_case(7, b=9, a=50, d=3)
    rep = FakeTable(table[0])
    whole = l1_nearest(query, k=4, representation=rep, obs_BS=torch.zeros(9, 3), chunk=50)
    for chunk in (1, 3, 8, 49):
        rep.calls.clear()
        part = l1_nearest(query, k=4, representation=rep, obs_BS=torch.zeros(9, 3), chunk=chunk)
        assert torch.equal(part[0], whole[0]) and torch.equal(part[1], whole[1])
        assert max(rep.calls) <= chunk and sum(rep.calls) == 50  # chunk by chunk, every action once
    # a state-independent [1, A, D] table is shared by every query
    shared = l1_nearest(query, table[:1], k=4, chunk=6)
    assert torch.equal(shared[0], whole[0])


def test_sorted_by_distance():
    query, table = random_case(3, b=5, a=40, d=6)
    _, dist = l1_nearest(query, table, k=10, chunk=7)
    assert (dist[:, 1:] >= dist[:, :-1]).all()


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 6, 100])
def test_ties_lowest_index_wins(chunk):
    table = torch.randn(1, 10, 3, generator=torch.Generator().manual_seed(0))
    table[0, 7] = table[0, 3]
    table[0, 9] = table[0, 3]
    query = table[0, 3][None].clone()
    idx, dist = l1_nearest(query, table, k=3, chunk=chunk)
    assert idx.tolist() == [[3, 7, 9]] and dist.tolist() == [[0.0, 0.0, 0.0]]
    assert l1_nearest(query, table, chunk=chunk)[0].item() == 3
    same = torch.zeros(2, 6, 2)
    assert l1_nearest(torch.ones(2, 2), same, k=4, chunk=chunk)[0].tolist() == [[0, 1, 2, 3]] * 2


@pytest.mark.parametrize(
    "call",
    [
        lambda: l1_nearest(torch.zeros(3), torch.zeros(3, 4, 3)),  # query not 2-D
        lambda: l1_nearest(torch.zeros(2, 3), torch.zeros(2, 4, 5)),  # D mismatch
        lambda: l1_nearest(torch.zeros(2, 3), torch.zeros(3, 4, 3)),  # B mismatch
        lambda: l1_nearest(torch.zeros(2, 3), torch.zeros(2, 4, 3), k=5),  # k > A
        lambda: l1_nearest(torch.zeros(2, 3), torch.zeros(2, 4, 3), k=0),
        lambda: l1_nearest(torch.zeros(2, 3), torch.zeros(2, 4, 3), chunk=0),
        lambda: l1_nearest(torch.zeros(2, 3)),  # neither table nor representation
        lambda: l1_nearest(torch.zeros(2, 3), torch.zeros(2, 4, 3), representation=FakeTable(torch.zeros(4, 3))),
        lambda: l1_nearest(torch.zeros(2, 3), representation=FakeTable(torch.zeros(4, 3))),  # no obs
        lambda: l1_nearest(torch.zeros(2, 5), representation=FakeTable(torch.zeros(4, 3)), obs_BS=torch.zeros(2, 3)),
    ],
)
def test_shape_errors(call):
    with pytest.raises(ValueError, match="l1_nearest"):
        call()


def test_latent_policy_maps_embedding_back_to_its_action():
    table = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    rep = FakeTable(table)
    policy = LatentPolicy(lambda obs: table[5].expand(obs.shape[0], -1), rep, chunk=10)
    obs = np.random.default_rng(0).random((13, 3), dtype=np.float32)
    actions = policy.act(obs)
    assert actions.dtype == np.int64 and actions.shape == (13,)
    assert (actions == 5).all()
    assert isinstance(policy, Policy)
    with pytest.raises(ValueError, match="obs"):
        policy.act(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="actor output"):
        LatentPolicy(lambda obs: torch.zeros(obs.shape[0], 3), rep).act(obs)


class BehaviourPolicy:
    """A maze behaviour with its own generator, as a Policy."""

    def __init__(self, model, name, seed=0):
        self.behaviour, self.rng = make_behaviour(model, name), np.random.default_rng(seed)

    def act(self, obs):
        return self.behaviour(obs, self.rng)


def test_expert_scores_high_and_random_near_zero():
    model = make_model("maze", SMALL_MAZE)
    expert = evaluate(BehaviourPolicy(model, "expert"), "maze", episodes=100, seed=1, env_overrides=SMALL_MAZE)
    assert expert.normalised_score > 90 and expert.success_rate > 0.9
    assert expert.env_id == "merlion/Maze-v0" and expert.n_episodes == 100
    assert expert.returns.dtype == np.float64 and expert.lengths.dtype == np.int64 and expert.successes.dtype == bool
    assert expert.mean_return == pytest.approx(expert.returns.mean())
    random = evaluate(BehaviourPolicy(model, "random"), "maze", episodes=100, seed=1, env_overrides=SMALL_MAZE)
    assert abs(random.normalised_score) < 10


def test_behaviour_reference_plays_the_agents_episodes():
    # an agent that acts exactly as the medium planner (deterministic, and the maze's observation
    # is its state) gets the same episodes, so the same returns, as the behaviour reference
    model = make_model("maze", SMALL_MAZE)
    for seed in (3, 4):
        reference = evaluate_behaviour("medium", "maze", 30, seed, SMALL_MAZE)
        agent = evaluate(BehaviourPolicy(model, "medium"), "maze", 30, seed, SMALL_MAZE)
        np.testing.assert_array_equal(reference.returns, agent.returns)
        np.testing.assert_array_equal(reference.lengths, agent.lengths)
    assert evaluate_behaviour("expert", "maze", 50, 1, SMALL_MAZE).normalised_score > 90
    assert abs(evaluate_behaviour("random", "maze", 100, 1, SMALL_MAZE).normalised_score) < 10
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_behaviour("medium", "maze", 0)


def test_same_seed_same_result_and_serialisation():
    model = make_model("maze", SMALL_MAZE)
    run = lambda seed: evaluate(BehaviourPolicy(model, "random", 3), "maze", 20, seed, SMALL_MAZE)  # noqa: E731
    a, b, c = run(4), run(4), run(5)
    assert a == b and a != c
    d = json.loads(json.dumps(a.to_dict()))
    assert d["n_episodes"] == 20 and d["env_id"] == "merlion/Maze-v0" and len(d["returns"]) == 20
    assert "returns" not in a.to_dict(include_episodes=False)
    point = learning_curve_point(1000, a)
    assert point == {
        "step": 1000,
        "mean_return": a.mean_return,
        "normalised_score": a.normalised_score,
        "success_rate": a.success_rate,
    }
    assert isinstance(a, EvalResult)


def test_evaluate_latent_policy_batches_running_states():
    model = make_model("maze", SMALL_MAZE)
    rep = FakeTable(torch.as_tensor(model.displacements, dtype=torch.float32))
    sizes = []

    def actor(obs):
        sizes.append(obs.shape[0])
        return torch.tensor([[1.0, 1.0]]).expand(obs.shape[0], -1) * 0.7  # head up-right

    result = evaluate(LatentPolicy(actor, rep), "maze", episodes=16, seed=0, env_overrides=SMALL_MAZE)
    assert result.n_episodes == 16 and sizes[0] == 16
    assert len(sizes) == result.lengths.max() and sorted(sizes, reverse=True) == sizes  # one call per step


def test_evaluate_rejects_bad_actions():
    class Bad:
        def act(self, obs):
            return np.full(len(obs), 10_000)

    with pytest.raises(ValueError, match="outside"):
        evaluate(Bad(), "maze", episodes=2, env_overrides=SMALL_MAZE)
    with pytest.raises(ValueError, match="episodes"):
        evaluate(Bad(), "maze", episodes=0)
