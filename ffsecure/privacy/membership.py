"""Loss-based membership inference against a generator module.

An attacker who holds the module and a candidate image asks: was this image
in the training set? A generator fits its training images better than
unseen ones, so the per-example training loss is the classic signal (Yeom et
al. 2018; for diffusion models, Carlini et al. 2023 and Matsumoto et al.
2023):

* ``cvae``: the negative ELBO (reconstruction + KL, per pixel), averaged over
  ``draws`` fixed latent noise draws;
* ``ddpm``: the denoising error at ``draws`` fixed timesteps spread over the
  first half of the schedule, each with fixed noise, conditioned on the label;
* ``flow``: the flow-matching (velocity) error at ``draws`` fixed times spread
  over the data half of the path (t in [0.5, 0.95], t = 1 is the image), each
  with fixed noise, conditioned on the label.

All noise comes from seeded generators and is the same for every example
set, so members and non-members are scored identically. The score is
``-loss``; AUROC and the TPR at 1% FPR summarise how well it separates
members from held-out non-members (0.5 and 0.01 = no leakage).

Black-box attack (any module, the only one that applies to a module fitted
by the mean-embedding mechanism, whose encoder never saw data): the distance
from the candidate to its nearest of ``samples`` images the module generates
for the candidate's class ("GAN-Leaks", Chen et al. 2020); a generator that
memorised its training images puts samples closer to members. The score is
``-distance``; the generated set is the same (seeded) for members and
non-members. :func:`strongest` puts the attacks that apply together and reports
the strongest (highest AUROC) at the top level, naming it in ``attack``;
:mod:`ffsecure.privacy.check` runs them under every sampler.

Difficulty calibration (Watson et al. 2022, the offline form of LiRA,
Carlini et al. 2022): a *reference* generator of the same family and config is
trained on real data disjoint from both sets; the score becomes
``loss_reference(x) - loss_target(x)``, which removes how hard an image is
in itself and leaves how much better the target fits it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ffsecure.errors import DataError
from ffsecure.generators.ddpm import alphas_cumprod
from ffsecure.generators.flow import flow_losses
from ffsecure.generators.training import check_data

DEFAULT_DRAWS = {"cvae": 8, "ddpm": 8, "flow": 8}
BATCH = 256
#: Generated images per class the black-box attack compares each candidate with.
DEFAULT_BLACK_BOX_SAMPLES = 500


def _check(
    x: torch.Tensor, y: torch.Tensor, config: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    return check_data(x, y, config["image_shape"], config["num_classes"])


@torch.no_grad()
def example_losses(
    gen: Any, images: torch.Tensor, labels: torch.Tensor, *, draws: int | None = None, seed: int = 0
) -> torch.Tensor:
    """The generator's loss on each example, ``(N,)`` float64, averaged over
    ``draws`` fixed noise draws."""
    family = getattr(gen, "family", None)
    if family not in DEFAULT_DRAWS:
        raise DataError(
            f"membership inference does not know generator family {family!r}",
            code="E_DATA_FORMAT",
            hint="use a cvae, ddpm or flow module",
        )
    x, y = _check(images, labels, gen.config)
    draws = DEFAULT_DRAWS[family] if draws is None else int(draws)
    if draws < 1:
        raise DataError("draws must be at least 1", code="E_DATA_FORMAT", hint="use e.g. 8")
    net = gen.model.to("cpu").eval()
    n = x.shape[0]
    total = torch.zeros(n, dtype=torch.float64)
    if family == "cvae":
        zd = gen.config["latent_dim"]
        for d in range(draws):
            eps = torch.randn(n, zd, generator=torch.Generator().manual_seed(seed * 1009 + d))
            for s in range(0, n, BATCH):
                total[s : s + BATCH] += net(
                    x[s : s + BATCH], y[s : s + BATCH], eps[s : s + BATCH], 1.0
                ).double()
    elif family == "flow":
        for d, t_val in enumerate(np.linspace(0.5, 0.95, draws).tolist()):
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed * 1009 + d))
            t = torch.full((n,), t_val)
            for s in range(0, n, BATCH):
                part = slice(s, s + BATCH)
                total[part] += flow_losses(net, x[part], y[part], t[part], noise[part]).double()
    else:
        cfg = gen.config
        abar = alphas_cumprod(cfg["schedule"], cfg["timesteps"]).float()
        steps = np.linspace(0.05, 0.5, draws) * (cfg["timesteps"] - 1)
        for d, t_val in enumerate(np.round(steps).astype(int).tolist()):
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed * 1009 + d))
            a = abar[t_val]
            xt = a.sqrt() * x + (1 - a).sqrt() * noise
            t = torch.full((n,), t_val, dtype=torch.int64)
            for s in range(0, n, BATCH):
                pred = net(xt[s : s + BATCH], t[s : s + BATCH], y[s : s + BATCH])
                total[s : s + BATCH] += (
                    (pred - noise[s : s + BATCH]).pow(2).flatten(1).mean(dim=1).double()
                )
    return total / draws


def auroc(member_scores: Any, non_member_scores: Any) -> float:
    """P(score of a random member > score of a random non-member), ties counting one half."""
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    nm = np.asarray(non_member_scores, dtype=np.float64).ravel()
    if m.size == 0 or nm.size == 0 or not (np.isfinite(m).all() and np.isfinite(nm).all()):
        raise DataError(
            "AUROC needs finite scores for at least one member and one non-member",
            code="E_DATA_FORMAT",
            hint="give both sets at least one example",
        )
    # heavy: scipy, only when the attack is scored
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([m, nm]))
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2.0
    return float(u / (m.size * nm.size))


def auroc_interval(value: float, members: int, non_members: int) -> tuple[float, float]:
    """A 95% interval of an AUROC measured on ``members`` and ``non_members`` examples.

    Hanley and McNeil (1982)'s standard error, clipped to [0, 1]: with a few dozen
    held-out images an attack at chance level can read 0.6, and this says so.
    """
    a, n1, n0 = float(value), max(1, int(members)), max(1, int(non_members))
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    half = 1.96 * math.sqrt(max(0.0, var))
    return max(0.0, a - half), min(1.0, a + half)


def tpr_at_fpr(member_scores: Any, non_member_scores: Any, fpr: float = 0.01) -> float:
    """Fraction of members scoring above the threshold that at most ``fpr`` of
    non-members exceed."""
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    nm = np.sort(np.asarray(non_member_scores, dtype=np.float64).ravel())[::-1]
    if m.size == 0 or nm.size == 0:
        raise DataError(
            "TPR needs at least one member and one non-member",
            code="E_DATA_FORMAT",
            hint="give both sets at least one example",
        )
    allowed = int(np.floor(fpr * nm.size))  # non-members allowed above the threshold
    threshold = nm[allowed] if allowed < nm.size else -np.inf
    return float((m > threshold).mean())


def scores_summary(member_scores: Any, non_member_scores: Any) -> dict[str, float]:
    return {
        "auroc": auroc(member_scores, non_member_scores),
        "tpr_at_1pct_fpr": tpr_at_fpr(member_scores, non_member_scores, 0.01),
    }


@torch.no_grad()
def _nearest_sample_distances(
    gen: Any,
    sets: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    samples: int,
    seed: int,
) -> list[torch.Tensor]:
    """For every set, each example's L2 distance to the nearest of ``samples`` generated
    images of its class, generating each class's images once for all the sets."""
    checked = [_check(x, y, gen.config) for x, y in sets]
    if samples < 1:
        raise DataError("samples must be at least 1", code="E_DATA_FORMAT", hint="use e.g. 500")
    out = [torch.empty(x.shape[0], dtype=torch.float64) for x, _y in checked]
    for c in sorted({int(v) for _x, y in checked for v in y}):
        fake = gen.sample(torch.full((samples,), c, dtype=torch.int64), seed=seed * 1009 + c)
        fake_flat = fake.reshape(samples, -1).double()
        for (x, y), distances in zip(checked, out, strict=True):
            rows = (y == c).nonzero(as_tuple=True)[0]
            for s in range(0, rows.numel(), BATCH):
                idx = rows[s : s + BATCH]
                flat = x[idx].reshape(idx.numel(), -1).double()
                distances[idx] = torch.cdist(flat, fake_flat).amin(1)
    return out


def loss_based_attack(
    gen: Any,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    *,
    reference: Any | None = None,
    draws: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The loss attack (and, with a ``reference`` generator, its calibrated form): AUROC, TPR at
    1% FPR, mean losses. It does not sample, so the sampler's settings do not change it."""
    lm = example_losses(gen, *members, draws=draws, seed=seed)
    ln = example_losses(gen, *non_members, draws=draws, seed=seed)
    out: dict[str, Any] = {
        "draws": DEFAULT_DRAWS[gen.family] if draws is None else int(draws),
        "mean_loss_members": float(lm.mean()),
        "mean_loss_non_members": float(ln.mean()),
        **scores_summary(-lm.numpy(), -ln.numpy()),
    }
    if reference is not None:
        rm = example_losses(reference, *members, draws=draws, seed=seed)
        rn = example_losses(reference, *non_members, draws=draws, seed=seed)
        out["calibrated"] = scores_summary((rm - lm).numpy(), (rn - ln).numpy())
    return out


def black_box_attack(
    gen: Any,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    *,
    samples: int = DEFAULT_BLACK_BOX_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The nearest-generated-sample attack: AUROC, TPR at 1% FPR, mean distances."""
    dm, dn = _nearest_sample_distances(gen, [members, non_members], samples=samples, seed=seed)
    return {
        "samples_per_class": int(samples),
        "mean_distance_members": float(dm.mean()),
        "mean_distance_non_members": float(dn.mean()),
        **scores_summary(-dm.numpy(), -dn.numpy()),
    }


def strongest(
    members: int, non_members: int, loss: dict[str, Any] | None, black_box: dict[str, Any]
) -> dict[str, Any]:
    """The attacks' result from its parts: the loss attack's (or None) and the black-box
    attack's; the top-level AUROC and TPR are the strongest attack's (highest AUROC)."""
    out: dict[str, Any] = {"members": int(members), "non_members": int(non_members)}
    found: dict[str, dict[str, Any]] = {}
    if loss is not None:
        out.update(loss)
        found["loss"] = loss
        if "calibrated" in loss:
            found["calibrated-loss"] = loss["calibrated"]
    out["black_box"] = found["nearest-sample"] = black_box
    name = max(found, key=lambda attack_name: found[attack_name]["auroc"])
    out["attack"] = name
    out["auroc"] = found[name]["auroc"]
    out["tpr_at_1pct_fpr"] = found[name]["tpr_at_1pct_fpr"]
    out["auroc_ci95"] = list(auroc_interval(out["auroc"], out["members"], out["non_members"]))
    return out
