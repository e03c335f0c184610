"""Summaries every course stage shares: a mean over seeds and its standard error.

Seeds are independent runs, so the standard error of their mean is
``s / sqrt(n)`` with ``s`` the sample standard deviation (Bessel-corrected);
a single seed has no spread to measure and gets 0.
"""

from __future__ import annotations

import math

import torch


def mean_and_se(values, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` over ``dim`` (the seeds) and its standard error ``s / sqrt(n)``.

    ``values`` is a tensor or a (nested) list of numbers; both results are
    float64 tensors with ``dim`` removed (0-d for a flat list: call ``float``).
    """
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.numel() == 0:
        raise ValueError("mean_and_se needs at least one value")
    n = x.shape[dim]
    mean = x.mean(dim)
    se = x.std(dim) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    return mean, se


__all__ = ["mean_and_se"]
