"""Distribution-balanced loss for multi-label presence heads (Wu et al., ECCV 2020; METHODS.md section 7).

For a sample ``k`` with multi-hot labels ``y^k`` over ``C`` classes and class counts ``n_i``
(number of training samples that contain class ``i``, out of ``N``):

* re-balancing: ``P^C_i = 1 / (C n_i)``, ``P^I(x^k) = (1/C) sum_{i: y_i^k = 1} 1 / n_i``,
  ``r_i^k = P^C_i / P^I(x^k)``, smoothed ``r_hat = alpha + sigmoid(beta (r - mu))``. A sample
  with no positive label has no instance-level sampling frequency; it gets ``r = 1`` (as the
  positive class of a single-label sample);
* negative-tolerant regularisation: prior ``p_i = n_i / N``, ``b_hat_i = -log(1/p_i - 1)``,
  ``nu_i = -kappa b_hat_i``; per logit ``z``: positives ``log(1 + exp(-(z - nu)))``, negatives
  ``(1/lambda) log(1 + exp(lambda (z - nu)))``.
  Erratum (METHODS.md): the slides print both exponents with the opposite sign.

``L = mean over classes (and samples) of r_hat * term``. With ``rebalance=False`` (``r_hat = 1``)
and ``negative_tolerant=False`` (``nu = 0, lambda = 1``) it is exactly
``binary_cross_entropy_with_logits`` (also with ``kappa=0, lam=1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_flag
from ._common import (
    check_finite,
    check_finite_tensor,
    check_reduction,
    check_unit_range,
    no_autocast,
    reduce,
    upcast,
)

__all__ = ["DistributionBalancedLoss"]


class DistributionBalancedLoss(nn.Module):
    """DB loss on multi-label logits.

    Args:
        class_counts: ``(C,)`` number of training samples containing each class (``n_i``, > 0).
        num_samples: number of training samples ``N`` (>= every count); needed for the prior
            ``n_i / N`` (clamped to ``[1e-6, 1 - 1e-6]``, so a class in every sample stays finite).
        rebalance: use the re-balancing weights ``r_hat`` (else 1).
        negative_tolerant: use ``nu`` and ``lam`` (else ``nu = 0``, ``lam = 1``).
        alpha, beta, mu: smoothing of ``r`` (0.1, 10, 0.2 to 0.3 in the paper).
        kappa: bias scale of ``nu`` (0.05); lam: negative scale ``lambda`` (2 to 5).
        reduction: ``"mean"`` (over samples and classes), ``"sum"`` or ``"none"`` (per element).

    Forward: ``logits`` and ``targets`` (multi-hot in {0, 1}) of shape ``(B, C)`` or
    ``(B, C, *spatial)`` (level-wise presence maps; channel = class).
    """

    def __init__(
        self,
        class_counts: Sequence[float] | torch.Tensor,
        num_samples: int,
        rebalance: bool = True,
        negative_tolerant: bool = True,
        alpha: float = 0.1,
        beta: float = 10.0,
        mu: float = 0.3,
        kappa: float = 0.05,
        lam: float = 2.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        n = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
        if n.numel() == 0 or not torch.all(torch.isfinite(n)) or torch.any(n <= 0):
            raise ValueError(f"class_counts must be positive counts, got {class_counts!r}")
        check_finite(num_samples=num_samples, alpha=alpha, beta=beta, mu=mu, kappa=kappa,
                     lam=lam)
        if isinstance(num_samples, float) and not num_samples.is_integer():
            raise ValueError(f"num_samples must be a whole number of samples, got {num_samples!r}")
        if not num_samples > 0 or float(n.max()) > num_samples:
            raise ValueError(f"num_samples must be >= every class count, got {num_samples!r}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        self.rebalance = check_flag("rebalance", rebalance)
        self.negative_tolerant = check_flag("negative_tolerant", negative_tolerant)
        self.alpha, self.beta, self.mu = float(alpha), float(beta), float(mu)
        self.kappa, self.lam = float(kappa), float(lam)
        self.reduction = check_reduction(reduction)
        prior = (n / float(num_samples)).clamp(1e-6, 1 - 1e-6)
        b_hat = -torch.log(1.0 / prior - 1.0)
        self.register_buffer("inv_counts", (1.0 / n).float())
        self.register_buffer("nu", (-self.kappa * b_hat).float())

    @classmethod
    def from_labels(cls, labels, **kwargs) -> DistributionBalancedLoss:
        """Build from the training set's multi-hot labels ``(N, C)`` (counts and N from them)."""
        y = torch.as_tensor(labels)
        if y.ndim != 2:
            raise ValueError(f"labels must be (N, C) multi-hot, got shape {tuple(y.shape)}")
        counts = (y != 0).sum(0).to(torch.float64)
        if torch.any(counts == 0):
            raise ValueError(f"every class needs at least one positive sample, counts {counts.tolist()}")
        return cls(counts, int(y.shape[0]), **kwargs)

    def weights(self, targets: torch.Tensor) -> torch.Tensor:
        """Re-balancing weights ``r_hat`` of shape ``targets.shape`` (1 if ``rebalance`` is off)."""
        y = upcast(targets)
        if not self.rebalance:
            return torch.ones_like(y)
        shape = (1, -1) + (1,) * (y.ndim - 2)
        inv = self.inv_counts.to(y.dtype).view(shape)
        c = y.shape[1]
        p_c = inv / c
        p_i = (y * inv).sum(1, keepdim=True) / c
        r = torch.where(p_i > 0, p_c / p_i.clamp_min(torch.finfo(y.dtype).tiny), torch.ones_like(p_i))
        return self.alpha + torch.sigmoid(self.beta * (r - self.mu))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        for name, v in (("logits", logits), ("targets", targets)):
            if not isinstance(v, torch.Tensor):  # an outside audit: numpy gave an AttributeError
                raise ValueError(f"{name} must be a torch.Tensor (B, C[, ...]), got {type(v).__name__}")
        if logits.ndim < 2 or logits.shape != targets.shape:
            raise ValueError(
                f"logits and targets must both be (B, C[, ...]) of one shape, got "
                f"{tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        if logits.shape[1] != self.nu.numel():
            raise ValueError(f"logits have {logits.shape[1]} classes, class_counts {self.nu.numel()}")
        check_finite_tensor(logits, "logits")
        check_unit_range(targets, "targets")
        with no_autocast(logits):
            z = upcast(logits)
            y = upcast(targets).to(z.dtype)
            shape = (1, -1) + (1,) * (z.ndim - 2)
            if self.negative_tolerant:
                nu = self.nu.to(z.dtype).view(shape)
                lam = self.lam
            else:
                nu = torch.zeros((), dtype=z.dtype, device=z.device)
                lam = 1.0
            zs = z - nu
            pos = F.softplus(-zs)
            neg = F.softplus(lam * zs) / lam
            loss = self.weights(y).detach() * (y * pos + (1.0 - y) * neg)
            return reduce(loss, self.reduction)
