"""``memorization-divergence``: M = KL(q_eps || p_theta), a model-level metric (needs the model).

See ``side_bench.scoring.divergence`` for the estimator. The runner calls ``compute_model`` once
per target model with a ``ModelContext`` (``target``, ``train`` in [-1, 1], ``train_labels``,
``ctx``); where there is no model (the null baseline, rescoring stored records) the core says so
in the row and never calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from side_bench.plugin_api import BenchError, MetricValue, ModelContext, hookimpl


class MemorizationDivergence:
    """M = KL(q_eps || p_theta) in nats per image (divide by C*H*W for nats per dimension).

    Monte Carlo over ``draws`` draws x ~ q_eps (seeded by (ctx.seed, j)); log q_eps exact;
    log p_theta from the model's probability-flow ODE (RK4, ``ode_steps`` steps on a log-sigma
    grid) at noise level ``eps`` (the model's own density blurred by the same eps as the
    training set; a model that reproduces D exactly scores 0). The divergence of the ODE is
    exact up to ``exact_max_dim`` dimensions, else Hutchinson with ``probes`` seeded Rademacher
    probes (unbiased; its noise is inside each draw's term, so the reported standard error
    covers it). On a CPU the exact divergence costs about 100x the Hutchinson one at 64
    dimensions, hence the default exact_max_dim = 0. A class-conditional target is measured
    per label, sum_c pi_c KL(q_eps,c || p_theta(. | c)) (each draw with its training image's
    label; see ``memorization_divergence``). Smaller = closer to the blurred training set =
    more memorization. The value carries its Monte Carlo standard error (``se``) and a normal
    95% interval.
    """

    uses_bands = False
    needs_model = True
    direction = "lower"
    unit = "nats"
    description = "memorization divergence KL(q_eps || p_theta), nats per image (smaller = more memorization)"

    @dataclass
    class Settings:
        eps: float = 0.1  # in the model's [-1, 1] pixel units
        draws: int = 256
        ode_steps: int = 24
        exact_max_dim: int = 0  # exact divergence up to this many dimensions; Hutchinson beyond
        probes: int = 2
        batch_size: int = 64

        def validate(self, where: str) -> None:
            if not self.eps > 0:
                raise BenchError(f"{where}: eps: expected a positive number")
            for key in ("draws", "ode_steps", "probes", "batch_size"):
                if getattr(self, key) < (2 if key == "draws" else 1):
                    raise BenchError(f"{where}: {key}: expected a positive integer (draws at least 2)")

    def __init__(self, settings: MemorizationDivergence.Settings = None):
        self.settings = settings or MemorizationDivergence.Settings()
        self.last = None  # the last DivergenceEstimate (seconds, draws), for whoever reports cost

    def compute_model(self, model: ModelContext) -> MetricValue:
        from side_bench.plugin_api import FlowLogDensity, UNetEps, memorization_divergence

        s = self.settings
        target, ctx = model.target, model.ctx
        labels = model.train_labels if target.num_classes else None
        if target.num_classes and labels is None:
            return MetricValue(None, reason="a class-conditional target needs the labels it was trained with")
        flow = FlowLogDensity(UNetEps(target, ctx.device), sigma_start=s.eps, steps=s.ode_steps,
                              exact_max_dim=s.exact_max_dim, probes=s.probes, seed=ctx.seed)
        estimate = memorization_divergence(model.train, flow, eps=s.eps, draws=s.draws, seed=ctx.seed,
                                           train_labels=labels, batch_size=s.batch_size, progress=ctx.progress)
        self.last = estimate
        half = 1.96 * estimate.se
        if not math.isfinite(estimate.value):
            return MetricValue(None, reason=f"estimate not finite ({estimate.value})")
        return MetricValue(estimate.value, n=estimate.draws, se=estimate.se, ci_low=estimate.value - half,
                           ci_high=estimate.value + half, interval="normal-monte-carlo")


@hookimpl
def register_metrics(register):
    register("memorization-divergence", MemorizationDivergence, aliases=("divergence",))
