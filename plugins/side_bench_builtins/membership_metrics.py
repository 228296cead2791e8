"""Membership inference, model-level metrics: does the target leak *which* images it was trained on?

Each metric scores every member (a training image of the target: the scale's images, for a
fine-tuned target its fine-tuning images) and every non-member (the held-out images, never in
any training set) with one attack's statistic, and reports how well the statistic separates
them: ROC AUC, or TPR at 1% or 0.1% FPR (the ``report`` setting; a suite lists one metric
several times with ``id``, the per-image scores are computed once per target and settings).
Intervals (``side_bench.scoring.stats``): for the AUC, the score interval with the Hanley-McNeil
variance (``membership_auc``); for a TPR, Clopper-Pearson on the members above the threshold
(``membership_tpr``). Both stay honest at 0 and 1: the stratified percentile bootstrap they
replace gave [1, 1] to every separable sample (rows before schema version 4 carry it; reading
them recomputes these intervals from the value and the two group sizes, see
``side_bench/results/records.py``).

The statistics, as the authors' code computes them (checked against it, see docs/user-guide.md,
"Membership inference"); x in [-1, 1], alphabar_t the target's ``alphas_cumprod[t]``, norms
summed over the pixels, a lower statistic = more likely a member:

- ``loss`` (the naive loss attack): ||eps - eps_theta(sqrt(ab_t) x + sqrt(1 - ab_t) eps, t)||^2,
  eps ~ N(0, I) seeded per image;
- ``secmi`` (Duan et al., ICML 2023, jinhaoduan/SecMI ``mia_evals/secmia.py``, SecMI_stat):
  deterministic DDIM inversion from 0 in steps of ``interval`` to t_sec - interval
  (``range(0, t_sec, interval)[1:]``), one DDIM step on to t_sec and back, ||x - x_back||^2;
- ``pia`` (Kong et al., ICLR 2024, kong13661/PIA ``DDPM/components.py``): eps_0 = eps_theta(x, 0),
  x_t = sqrt(ab_t) x + sqrt(1 - ab_t) eps_0, ||eps_0 - eps_theta(x_t, t)||_4^4;
- ``pian``: the same with eps_0 rescaled to mean |eps_0| = sqrt(2 / pi) (a standard normal's),
  per image, as PIAN's ``ddim_reverse`` does;
- ``sima`` (Rao, Qu and Moyer 2025, mx-ethan-rao/SimA ``DDPM/components.py``): ||eps_theta(x, t)||_4^4,
  the clean image fed at timestep t.

Resolution: TPR at FPR alpha puts the threshold above all but floor(alpha * M) of the M
non-members (FPR <= alpha), so it rests on that many images: with M = 600 held out, 6 at 1%
and none at 0.1% (the threshold is then above every non-member).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from side_bench.plugin_api import BenchError, MetricValue, ModelContext, hookimpl, membership_auc, membership_tpr

REPORTS = {"auc": None, "tpr@1%": 0.01, "tpr@0.1%": 0.001}
_SCORES: dict = {}  # (target, statistic, settings) -> (unet kept alive, member scores, non-member scores)
_KEEP = 4  # cached score pairs; the metrics of one target come one after another


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2 (Mann-Whitney), higher score = member."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([members, nonmembers]))
    m, n = len(members), len(nonmembers)
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def members_above(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> int:
    """Members strictly above the (k+1)-th highest non-member score, k = floor(fpr * M): at
    most k non-members are flagged, so the FPR is at most ``fpr`` (0 when k = 0)."""
    k = int(math.floor(fpr * len(nonmembers) + 1e-9))
    if k >= len(nonmembers):
        return len(members)
    threshold = np.sort(nonmembers)[::-1][k]
    return int(np.sum(members > threshold))


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """Share of members above the threshold of ``members_above``."""
    return members_above(members, nonmembers, fpr) / len(members)


def separation(members: np.ndarray, nonmembers: np.ndarray, report: str) -> MetricValue:
    """``report`` of these scores (higher = member) with its interval: the AUC's score
    interval, or Clopper-Pearson on the members above the threshold for a TPR."""
    fpr = REPORTS[report]
    if fpr is None:
        return membership_auc(auc(members, nonmembers), len(members), len(nonmembers))
    return membership_tpr(members_above(members, nonmembers, fpr), len(members))


def statistics(kind: str, unet, alphas_cumprod, images, *, t: int, interval: int, seed: int, purpose: str,
               batch_size: int, device):
    """The per-image statistic (lower = more likely a member), float64 (n,), of ``images`` in [-1, 1].

    Image i's noise (``loss``) comes from (seed, purpose, i), never from the batch.
    """
    import torch

    from side_bench.plugin_api import sample_generator

    ab = alphas_cumprod.to(torch.float64)

    def eps(x, step):
        steps = torch.full((len(x),), int(step), device=device, dtype=torch.long)
        return unet(x, steps).sample.to(x.dtype)

    def coefficients(step, dtype):
        a = ab[int(step)]
        return a.sqrt().to(dtype).item(), (1 - a).sqrt().to(dtype).item()

    def ddim(x, t_from, t_to):  # the deterministic DDIM step between any two timesteps
        e = eps(x, t_from)
        a_from, s_from = coefficients(t_from, torch.float64)
        a_to, s_to = coefficients(t_to, torch.float64)
        x0 = (x - s_from * e) / a_from
        return a_to * x0 + s_to * e

    out = []
    unet = unet.to(device).eval()
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device=device, dtype=next(unet.parameters()).dtype)
        with torch.inference_mode():
            if kind == "loss":
                noise = torch.stack([torch.randn(x.shape[1:], generator=sample_generator(seed, purpose, start + j))
                                     for j in range(len(x))]).to(device=device, dtype=x.dtype)
                a, s = coefficients(t, x.dtype)
                value = (noise - eps(a * x + s * noise, t)).pow(2).flatten(1).sum(1)
            elif kind == "secmi":
                steps = list(range(0, t, interval))  # 0 -> interval -> ... -> t - interval
                current = x
                for t_from, t_to in zip(steps[:-1], steps[1:], strict=True):
                    current = ddim(current, t_from, t_to)
                back = ddim(ddim(current, steps[-1], t), t, steps[-1])
                value = (current - back).pow(2).flatten(1).sum(1)
            elif kind in ("pia", "pian"):
                e0 = eps(x, 0)
                if kind == "pian":
                    e0 = e0 / e0.abs().mean(dim=(1, 2, 3), keepdim=True) * math.sqrt(2 / math.pi)
                a, s = coefficients(t, x.dtype)
                value = (e0 - eps(a * x + s * e0, t)).abs().pow(4).flatten(1).sum(1)
            elif kind == "sima":
                value = eps(x, t).abs().pow(4).flatten(1).sum(1)
            else:
                raise BenchError(f"membership: unknown statistic {kind!r}")
        out.append(value.double().cpu())
    return torch.cat(out).numpy()


class MembershipMetric:
    """A membership-inference attack's separation of members from non-members (model-level)."""

    uses_bands = False
    needs_model = True
    direction = "higher"  # more separable = more leakage
    unit = "ratio"  # per instance: "ratio" for the AUC, "rate" for a TPR
    kind = ""
    default_t = 100

    @dataclass
    class Settings:
        report: str = "auc"  # "auc", "tpr@1%" or "tpr@0.1%"
        t: int = -1  # the attack's timestep; -1: its default (see the class)
        interval: int = 10  # SecMI's DDIM step (unused by the others)
        batch_size: int = 256

        def validate(self, where: str) -> None:
            if self.report not in REPORTS:
                raise BenchError(f"{where}: report: expected one of {', '.join(REPORTS)}, got {self.report!r}")
            if self.t != -1 and not 0 <= self.t < 100_000:
                raise BenchError(f"{where}: t: expected a timestep >= 0 (or -1 for the default), got {self.t}")
            if self.interval < 1 or self.batch_size < 1:
                raise BenchError(f"{where}: interval and batch_size: expected positive integers")

    def __init__(self, settings: MembershipMetric.Settings = None):
        self.settings = settings or type(self).Settings()
        # resolved here so the rows' settings (and the once-per-model key) name the t used
        if self.settings.t == -1:
            self.settings.t = self.default_t
        # an AUC is a probability of ordering (0.5 = chance), not a share of images: no percent
        self.unit = "ratio" if self.settings.report == "auc" else "rate"


    def compute_model(self, model: ModelContext) -> MetricValue:
        from diffusers import DDPMScheduler

        from side_bench.plugin_api import canonical_hash

        heldout = model.heldout
        if heldout is None or len(heldout) < 2 or len(model.train) < 2:
            return MetricValue(None, reason="needs at least 2 members and 2 held-out non-members")
        target, ctx, s = model.target, model.ctx, self.settings
        if target.num_classes:
            return MetricValue(None, reason="scores unconditional targets only (the non-members' labels are not given)")
        schedule = DDPMScheduler.from_config(target.scheduler_config)
        last = schedule.config.num_train_timesteps - 1
        if s.t > last or (self.kind == "secmi" and not 2 * s.interval <= s.t):
            return MetricValue(None, reason=f"t = {s.t} outside the schedule (0..{last}; SecMI: t >= 2 x interval)")
        key = canonical_hash([target.identity, id(target.unet), self.kind, {k: v for k, v in asdict(s).items()
                                                                        if k not in ("report", "batch_size")},
                              ctx.seed, str(ctx.device), len(model.train), len(heldout)])
        if key not in _SCORES:
            common = dict(t=s.t, interval=s.interval, seed=ctx.seed, batch_size=s.batch_size, device=ctx.device)
            ctx.progress(f"membership ({self.kind})", 0, 2)
            members = statistics(self.kind, target.unet, schedule.alphas_cumprod, model.train,
                                 purpose="membership-member", **common)
            ctx.progress(f"membership ({self.kind})", 1, 2)
            nonmembers = statistics(self.kind, target.unet, schedule.alphas_cumprod, heldout,
                                    purpose="membership-nonmember", **common)
            ctx.progress(f"membership ({self.kind})", 2, 2)
            while len(_SCORES) >= _KEEP:
                _SCORES.pop(next(iter(_SCORES)))
            _SCORES[key] = (target.unet, members, nonmembers)
        _, members, nonmembers = _SCORES[key]
        if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
            return MetricValue(None, reason="a statistic is not finite")
        # lower statistic = member: negate, so a higher score means "member"
        return separation(-members, -nonmembers, s.report)


def _described(name: str, what: str, default_t: int):
    class Metric(MembershipMetric):
        kind = name
        description = (f"membership inference, {what}: members (training images) vs held-out non-members, "
                       "ROC AUC or TPR at 1% / 0.1% FPR (setting report)")

    Metric.default_t = default_t
    Metric.__name__ = Metric.__qualname__ = f"Membership{name.capitalize()}"
    return Metric


# Defaults of t: the authors' code fixes none for SecMI but t_sec = 100 (its secmi_attack);
# PIA's and SimA's code report every t of a scan (PIA 10..300, SimA 0..200, both by 10) and
# the best; the values here are fixed in advance within those scans (a setting to sweep).
MembershipLoss = _described("loss", "the loss attack ||eps - eps_theta(x_t, t)||^2 (t = 100)", 100)
MembershipSecmi = _described("secmi", "SecMI (Duan et al. 2023), DDIM round trip at t_sec = 100 by 10", 100)
MembershipPia = _described("pia", "PIA (Kong et al. 2024), ||eps_theta(x,0) - eps_theta(x_t,t)||_4^4 (t = 200)", 200)
MembershipPian = _described("pian", "PIAN (Kong et al. 2024), PIA with eps_0 rescaled to a normal's scale (t = 200)",
                            200)
MembershipSima = _described("sima", "SimA (Rao et al. 2025), ||eps_theta(x, t)||_4^4 of the clean image (t = 100)", 100)


@hookimpl
def register_metrics(register):
    register("loss", MembershipLoss, aliases=("membership-loss",))
    register("secmi", MembershipSecmi)
    register("pia", MembershipPia)
    register("pian", MembershipPian)
    register("sima", MembershipSima)
