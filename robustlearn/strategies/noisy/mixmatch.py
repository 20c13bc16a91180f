"""The MixMatch pieces of DivideMix (Li, Socher & Hoi, ICLR 2020, arXiv 2002.07394), written once and tested against
their formulas. p = softmax(z), K classes, T the temperature:

    sharpen(p, T)_k      = p_k^(1/T) / Σ_j p_j^(1/T)
    refined(y, w, p̄)     = sharpen(w y + (1 − w) p̄, T)        label co-refinement (labelled samples; y one-hot, w the
                                                              clean probability from the other network's mixture,
                                                              p̄ the mean of the network's predictions over 2 views)
    guessed(p₁..p_m)     = sharpen(mean_j p_j, T)              label co-guessing (unlabelled samples; both networks'
                                                              predictions over both views)
    mixup(a, λ', perm)   = λ' a + (1 − λ') a[perm],  λ' = max(λ, 1 − λ),  λ ~ Beta(α, α)
    Lx = −mean_i Σ_k t_ik log q_ik                             over the mixed labelled rows
    Lu = mean_i (1/K) Σ_k (q_ik − t_ik)²                       over the mixed unlabelled rows (the official code's
                                                              `torch.mean` over rows and classes)
    prior penalty = Σ_k π_k log(π_k / q̄_k),  π uniform,  q̄ = mean_i q_i over every mixed row

As in the official code (github.com/LiJunnan1992/DivideMix, `Train_cifar.py`): the targets are built without
gradient; λ' ≥ 1/2 keeps the mixed row closest to its own (first) sample, whose labelled or unlabelled role it keeps.
`semi_supervised_loss` composes them into one network's DivideMix loss on a batch: Lx + λu · Lu + prior penalty.
"""

from __future__ import annotations

import torch

from robustlearn.strategies.noisy.targets import one_hot, soft_cross_entropy


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised over the last dimension."""
    powered = p.pow(1.0 / temperature)
    return powered / powered.sum(-1, keepdim=True)


def refine_labels(y_onehot: torch.Tensor, w: torch.Tensor, p_mean: torch.Tensor, temperature: float) -> torch.Tensor:
    """Label co-refinement: sharpen(w y + (1 − w) p̄, T), `w` (B,) the clean probabilities."""
    w = w.to(p_mean.dtype)[:, None]
    return sharpen(w * y_onehot.to(p_mean.dtype) + (1.0 - w) * p_mean, temperature)


def guess_labels(predictions: list[torch.Tensor] | tuple[torch.Tensor, ...], temperature: float) -> torch.Tensor:
    """Label co-guessing: sharpen(mean of the predicted distributions, T)."""
    return sharpen(torch.stack(list(predictions)).mean(0), temperature)


def mixup(values: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """λ' values + (1 − λ') values[perm] along the first dimension (λ' = `lam`, already max(λ, 1 − λ))."""
    return lam * values + (1.0 - lam) * values[perm]


def labelled_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row of Lx: −Σ_k t_k log softmax(z)_k (float32, `soft_cross_entropy`)."""
    return soft_cross_entropy(logits, targets)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32, or float64 where given (half precision is widened; exact float64 checks stay exact)."""
    return x if x.dtype == torch.float64 else x.float()


def unlabelled_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row of Lu: (1/K) Σ_k (softmax(z)_k − t_k)² (float32, or float64 for float64 logits)."""
    logits = _wide(logits)
    return (torch.softmax(logits, dim=1) - targets.to(logits.dtype)).pow(2).mean(1)


def prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """Σ_k π_k log(π_k / q̄_k) with π uniform over the K classes and q̄ the batch mean of softmax(z)."""
    k = logits.shape[1]
    mean_p = torch.softmax(_wide(logits), dim=1).mean(0)
    prior = torch.full_like(mean_p, 1.0 / k)
    return (prior * torch.log(prior / mean_p)).sum()


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per row Σ_k p_k log p_k: the official warm-up's confidence penalty for asymmetric noise."""
    log_p = torch.log_softmax(_wide(logits), dim=1)
    return (log_p.exp() * log_p).sum(1)


def semi_supervised_loss(
    views: tuple[torch.Tensor, torch.Tensor],
    own: tuple[torch.Tensor, torch.Tensor],
    other: tuple[torch.Tensor, torch.Tensor],
    y: torch.Tensor,
    w: torch.Tensor,
    labelled: torch.Tensor,
    forward,
    lam: float,
    perm: torch.Tensor,
    temperature: float,
    lambda_u: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One network's DivideMix loss on a batch of B samples, as B per-sample values whose mean is the loss.

    `views`: the two augmented views (B, ...); `own`: the network's probabilities on them (train mode, no gradient);
    `other`: the other network's (eval mode); `y` the noisy labels, `w` (B,) the clean probabilities from the other
    network's mixture, `labelled` (B,) bool (w > p_threshold); `forward` the network (logits of its K classes);
    `lam` = λ' ≥ 1/2 and `perm` a permutation of the 2B rows; `lambda_u` the ramped weight of Lu.
    Returns (per-sample values, {"lx", "lu", "prior"}) — no read of the device."""
    b = len(y)
    k = own[0].shape[1]
    with torch.no_grad():
        refined = refine_labels(one_hot(y, k), w.float(), (own[0] + own[1]) / 2, temperature)
        guessed = guess_labels((own[0], own[1], other[0], other[1]), temperature)
        target = torch.where(labelled[:, None], refined, guessed)
        mixed_targets = mixup(torch.cat([target, target]), lam, perm)
    mixed_inputs = mixup(torch.cat([views[0], views[1]]), lam, perm)
    logits = forward(mixed_inputs).float()
    lab = torch.cat([labelled, labelled]).float()  # a mixed row keeps the role of its leading (λ' ≥ 1/2) sample
    n_lab, n_unl = lab.sum().clamp_min(1.0), (1.0 - lab).sum().clamp_min(1.0)
    lx_rows = labelled_rows(logits, mixed_targets)
    lu_rows = unlabelled_rows(logits, mixed_targets)
    prior = prior_penalty(logits)
    rows = lab * lx_rows / n_lab + lambda_u * (1.0 - lab) * lu_rows / n_unl + prior / (2 * b)
    per_sample = b * (rows[:b] + rows[b:])
    parts = {"lx": (lab * lx_rows).sum().detach() / n_lab, "lu": ((1.0 - lab) * lu_rows).sum().detach() / n_unl,
             "prior": prior.detach()}
    return per_sample, parts
