"""The memorization divergence estimator where the answer is known (exact Gaussian-mixture densities)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from side_bench.plugin_api import ModelContext
from side_bench.scoring.divergence import (
    FlowLogDensity,
    GaussianMixtureDensity,
    MixtureEps,
    draw_blurred,
    log_mixture,
    memorization_divergence,
)
from side_bench_builtins.divergence_metric import MemorizationDivergence

DIM = 16


def separated_centers(n=6, spacing=4.0):
    """Centers far apart (>= spacing in l2) so that a mixture's KL is the Gaussian one to many digits."""
    return torch.eye(DIM, dtype=torch.float64)[:n].reshape(n, 1, 4, 4) * spacing / math.sqrt(2)


def gaussian_kl(eps, width, dim=DIM):
    """KL(N(0, eps^2 I) || N(0, width^2 I)): the mixtures' KL when the components do not overlap."""
    r = eps**2 / width**2
    return 0.5 * dim * (r - 1 - math.log(r))


def test_log_mixture_matches_scipy():
    centers = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    points = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = np.log(np.mean([multivariate_normal(c.flatten().numpy(), 0.3**2 * np.eye(4)).pdf(points.numpy())
                               for c in centers], axis=0))
    np.testing.assert_allclose(log_mixture(points, centers, 0.3).numpy(), expected, rtol=1e-10)


def test_draws_are_seeded_per_draw():
    centers = separated_centers()
    a, sa = draw_blurred(centers, 0.1, 10, seed=3)
    b, sb = draw_blurred(centers, 0.1, 4, seed=3)
    assert torch.equal(a[:4], b) and torch.equal(sa[:4], sb)
    assert not torch.equal(draw_blurred(centers, 0.1, 4, seed=4)[0], b)


@pytest.mark.parametrize("width", [0.07, 0.15])
def test_exact_density_within_its_standard_error(width):
    centers, eps = separated_centers(), 0.1
    estimate = memorization_divergence(centers, GaussianMixtureDensity(centers, width), eps=eps, draws=400, seed=0)
    assert abs(estimate.value - gaussian_kl(eps, width)) < 3 * estimate.se
    assert estimate.draws == 400 and estimate.dim == DIM and estimate.seconds >= 0


def test_zero_when_the_model_is_q_eps():
    centers = separated_centers()
    estimate = memorization_divergence(centers, GaussianMixtureDensity(centers, 0.1), eps=0.1, draws=50, seed=0)
    assert estimate.value == pytest.approx(0.0, abs=1e-9) and estimate.se == pytest.approx(0.0, abs=1e-9)


def test_flow_density_of_the_ideal_denoiser_is_q_eps():
    """The ODE with the training set's exact score reproduces log q_eps: M = 0 (ODE error only)."""
    centers = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    flow = FlowLogDensity(MixtureEps(centers), sigma_start=0.1, steps=24)
    estimate = memorization_divergence(centers, flow, eps=0.1, draws=16, seed=0)
    assert abs(estimate.value) < 0.05


@pytest.mark.parametrize("exact_max_dim", [256, 0])  # exact divergence, then Hutchinson
def test_flow_density_matches_the_exact_mixture(exact_max_dim):
    """Model = the same mixture blurred wider (base width s): the ODE at sigma = eps must give the
    mixture of width sqrt(s^2 + eps^2), whose KL from q_eps is Gaussian (components apart)."""
    centers, eps, s = separated_centers(), 0.1, 0.08
    flow = FlowLogDensity(MixtureEps(centers, base_width=s), sigma_start=eps, steps=24,
                          exact_max_dim=exact_max_dim, probes=4, seed=0)
    estimate = memorization_divergence(centers, flow, eps=eps, draws=48, seed=0)
    exact = memorization_divergence(centers, GaussianMixtureDensity(centers, math.hypot(s, eps)), eps=eps,
                                    draws=48, seed=0)
    truth = gaussian_kl(eps, math.hypot(s, eps))
    assert abs(estimate.value - truth) < 3 * estimate.se + 0.05
    if exact_max_dim:  # same draws, exact divergence: only the ODE's discretization differs
        assert abs(estimate.value - exact.value) < 0.05


def test_conditional_divergence_is_per_label():
    """With labels, q_eps,c blurs class c only; a model equal to it per class scores 0."""
    centers = separated_centers()
    labels = torch.tensor([0, 0, 1, 1, 1, 2])

    def per_class(y, classes):
        out = torch.empty(len(y), dtype=torch.float64)
        for c in classes.unique().tolist():
            mask = classes == c
            out[mask] = log_mixture(y[mask], centers[labels == c], 0.1)
        return out

    estimate = memorization_divergence(centers, per_class, eps=0.1, draws=30, seed=0, train_labels=labels)
    assert estimate.conditional and estimate.value == pytest.approx(0.0, abs=1e-9)
    # the unconditional mixture as "model": log(pi_c) on average more than the per-class one
    marginal = memorization_divergence(centers, GaussianMixtureDensity(centers, 0.1), eps=0.1, draws=30, seed=0,
                                       train_labels=labels)
    assert marginal.value > 0.5


def test_metric_needs_the_model():
    from side_bench.registry import traits_of
    from side_bench.scoring.rows import metric_rows

    # where there is no model (null baseline, rescore) the core says so and never calls it
    row, = metric_rows(SimpleNamespace(n_candidates=3), {"divergence": MemorizationDivergence()}, [])
    assert row["value"] is None and "needs the target model" in row["reason"]
    assert traits_of("metrics", MemorizationDivergence()).compute_model is not None
    assert MemorizationDivergence.needs_model and MemorizationDivergence.direction == "lower"
    assert MemorizationDivergence.unit == "nats" and MemorizationDivergence.uses_bands is False


def test_metric_on_a_tiny_unet():
    from tests.test_rankers import context, tiny_target

    target = tiny_target()
    train = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metric = MemorizationDivergence(MemorizationDivergence.Settings(draws=4, ode_steps=2, batch_size=2))
    model = ModelContext(target=target, train=train, ctx=context())
    value = metric.compute_model(model)
    again = MemorizationDivergence(MemorizationDivergence.Settings(draws=4, ode_steps=2, batch_size=4)).compute_model(
        model)
    assert math.isfinite(value.value) and value.se > 0 and value.n == 4
    assert value.ci_low < value.value < value.ci_high
    assert metric.last.seconds > 0
    # Hutchinson probes are drawn per draw: the batch size does not change the estimate
    assert again.value == pytest.approx(value.value, rel=1e-6)


def test_marginal_over_labels_is_the_whole_mixture():
    """sum_c pi_c (mixture of class c) with pi_c = N_c / N is the mixture of all N images."""
    from side_bench.scoring.divergence import MarginalOverLabels

    centers = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])

    def per_class(y, classes):
        return log_mixture(y, centers[labels == int(classes[0])], 0.2)

    marginal = MarginalOverLabels(per_class, torch.bincount(labels).double() / len(labels))
    points, _ = draw_blurred(centers, 0.2, 7, seed=0)
    np.testing.assert_allclose(marginal(points).numpy(), log_mixture(points, centers, 0.2).numpy(), rtol=1e-10)


def test_metric_on_a_conditional_unet_needs_its_training_labels():
    from tests.test_rankers import context, tiny_target

    target = tiny_target(num_classes=3)
    train = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metric = MemorizationDivergence(MemorizationDivergence.Settings(draws=4, ode_steps=2))
    model = ModelContext(target=target, train=train, ctx=context())
    assert "labels" in metric.compute_model(model).reason
    model.train_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    value = metric.compute_model(model)
    assert math.isfinite(value.value) and metric.last.conditional
