"""The networks' observation input: standardisation + random Fourier features (models/obs_features.py)."""

import math

import pytest
import torch

from merlion_core.algos.discrete_cql import DiscreteCQL, DiscreteCQLConfig
from merlion_core.algos.latent_cql import LatentCQLConfig
from merlion_core.data.collect import collect
from merlion_core.data.sampler import BatchSampler
from merlion_core.models.obs_features import (
    ObservationFeatures,
    check_feature_options,
    feature_mlp,
    feature_mlp_repeated,
    fit_observation_features,
    fourier_features,
    observation_features_fitted,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_fourier_features_by_hand():
    z = torch.tensor([[1.0, -2.0]])
    w = torch.tensor([[0.5], [0.25]])  # one frequency: z W = 0.5 - 0.5 = 0
    out = fourier_features(z, w)
    assert torch.allclose(out, torch.tensor([[1.0, -2.0, 0.0, 1.0]]))  # [z, sin 0, cos 0]
    w2 = torch.tensor([[math.pi / 2], [0.0]])  # z W = pi / 2
    assert torch.allclose(fourier_features(z, w2), torch.tensor([[1.0, -2.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.equal(fourier_features(z, torch.zeros(2, 0)), z)  # no frequencies: z alone


def test_standardises_the_observation_and_passes_the_rest_through():
    features = ObservationFeatures(obs_dim=2, n_fourier=0, scale=1.0, seed=0)
    obs = torch.tensor([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    assert not observation_features_fitted(features)
    fit_observation_features(features, obs)
    assert observation_features_fitted(features)
    # column 0: mean 2, std sqrt(8/3); column 1 is constant: std kept at 1
    assert torch.allclose(features.mean, torch.tensor([2.0, 10.0]))
    assert torch.allclose(features.std, torch.tensor([math.sqrt(8 / 3), 1.0]))
    x = torch.tensor([[4.0, 11.0, 7.0, -7.0]])  # observation, then two latent columns
    assert features.out_dim == 2
    assert torch.allclose(features(x), torch.tensor([[2.0 / math.sqrt(8 / 3), 1.0, 7.0, -7.0]]))


def test_fourier_part_uses_the_standardised_observation():
    features = ObservationFeatures(obs_dim=2, n_fourier=4, scale=3.0, seed=5)
    fit_observation_features(features, torch.tensor([[0.0, 0.0], [2.0, 4.0]]))  # mean (1, 2), std (1, 2)
    x = torch.tensor([[3.0, 6.0, 0.5]])
    z = torch.tensor([[2.0, 2.0]])
    projected = z @ features.frequencies
    expected = torch.cat([z, torch.sin(projected), torch.cos(projected), torch.tensor([[0.5]])], dim=1)
    assert features.out_dim == 2 + 8
    assert torch.allclose(features(x), expected)
    # the frequencies come from the seed alone (and have the asked scale)
    assert torch.equal(ObservationFeatures(2, 4, 3.0, seed=5).frequencies, features.frequencies)
    assert not torch.equal(ObservationFeatures(2, 4, 3.0, seed=6).frequencies, features.frequencies)
    assert ObservationFeatures(2, 4000, 3.0, seed=0).frequencies.std().item() == pytest.approx(3.0, rel=0.05)


def test_bad_options_get_one_line_errors():
    with pytest.raises(ValueError, match="fourier_features: must be >= 0"):
        check_feature_options(-1, 1.0)
    with pytest.raises(ValueError, match="fourier_scale: must be > 0"):
        LatentCQLConfig(fourier_scale=0.0)
    with pytest.raises(ValueError, match="fourier_features"):
        DiscreteCQLConfig(fourier_features=-2)


def test_train_steps_fits_every_copy_from_the_whole_dataset():
    dataset = collect("maze", "medium", 0.5, 500, seed=0, env_overrides={"n_actuators": 4})
    algo = DiscreteCQL(DiscreteCQLConfig(batch_size=8), dataset.n_actions, dataset.obs_dim, "cpu")
    sampler = BatchSampler(dataset, 8, seed=0)
    list(algo.train_steps(sampler, steps=2))
    obs = torch.as_tensor(dataset.observations)
    copies = [m for m in algo.modules() if isinstance(m, ObservationFeatures)]
    assert len(copies) == 2  # the Q network's and the target network's
    for features in copies:
        assert torch.allclose(features.mean, obs.mean(0), atol=1e-6)
    # a fresh agent loaded from the state dict keeps the statistics (no refit from its first batch)
    fresh = DiscreteCQL(DiscreteCQLConfig(batch_size=8), dataset.n_actions, dataset.obs_dim, "cpu")
    fresh.load_state_dict(algo.state_dict())
    fresh.update(sampler.sample())
    assert torch.allclose(fresh.q[0].mean, obs.mean(0), atol=1e-6)


def test_feature_mlp_input_width():
    features = ObservationFeatures(obs_dim=3, n_fourier=5, scale=1.0, seed=0)
    net = feature_mlp(features, extra_in=2, hidden=(8,), out_dim=1)
    assert net(torch.zeros(4, 5)).shape == (4, 1)
    assert net[1][0].in_features == 3 + 10 + 2


def test_feature_mlp_repeated_equals_the_net_on_repeated_rows_values_and_gradients():
    torch.manual_seed(0)
    features = ObservationFeatures(obs_dim=4, n_fourier=3, scale=1.0, seed=0)
    fit_observation_features(features, torch.randn(50, 4) * 3.0 + 1.0)
    net = feature_mlp(features, extra_in=2, hidden=(8, 8), out_dim=1)
    obs, repeats = torch.randn(5, 4), (1, 3, 2)
    extra = torch.randn(5 * sum(repeats), 2)
    obs_rows = torch.cat([obs.repeat_interleave(r, dim=0) for r in repeats])
    # row order: block (1) pairs obs b with extra b; block (3) pairs obs b with rows 5 + 3b .. 5 + 3b + 2
    assert torch.equal(obs_rows[5 + 3 * 2 + 1], obs[2]) and torch.equal(obs_rows[5 + 15 + 2 * 4], obs[4])
    expected = net(torch.cat([obs_rows, extra], dim=-1))
    got = feature_mlp_repeated(net, obs, extra, repeats)
    assert got.shape == expected.shape == (30, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    weights = torch.randn(30, 1)
    grads_expected = torch.autograd.grad((expected * weights).sum(), list(net.parameters()))
    grads_got = torch.autograd.grad(
        (feature_mlp_repeated(net, obs, extra, repeats) * weights).sum(), list(net.parameters())
    )
    for g_got, g_expected in zip(grads_got, grads_expected, strict=True):
        torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-5)
    # a shuffled pairing is a different function: the test would see a wrong row order
    wrong = net(torch.cat([obs.repeat(sum(repeats), 1), extra], dim=-1))
    assert not torch.allclose(got, wrong, atol=1e-3)
    with pytest.raises(ValueError, match="29 extra rows, expected 5 observations x 6"):
        feature_mlp_repeated(net, obs, extra[:29], repeats)
