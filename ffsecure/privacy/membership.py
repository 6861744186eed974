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

Difficulty calibration (Watson et al. 2022, the offline form of LiRA,
Carlini et al. 2022): a *reference* generator of the same family and config is
trained on real data disjoint from both sets; the score becomes
``loss_reference(x) - loss_target(x)``, which removes how hard an image is
in itself and leaves how much better the target fits it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ffsecure.errors import DataError
from ffsecure.generators.ddpm import alphas_cumprod
from ffsecure.generators.flow import flow_losses
from ffsecure.generators.training import check_data

DEFAULT_DRAWS = {"cvae": 8, "ddpm": 8, "flow": 8}
BATCH = 256


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


def attack(
    gen: Any,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    *,
    reference: Any | None = None,
    draws: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the loss attack (and the calibrated one when a ``reference`` generator is given)."""
    lm = example_losses(gen, *members, draws=draws, seed=seed)
    ln = example_losses(gen, *non_members, draws=draws, seed=seed)
    out: dict[str, Any] = {
        "members": int(lm.numel()),
        "non_members": int(ln.numel()),
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
