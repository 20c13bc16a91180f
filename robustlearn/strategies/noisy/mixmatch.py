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
"""

from __future__ import annotations

import torch

from robustlearn.strategies.noisy.targets import soft_cross_entropy


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
