"""Is the network's θ-gradient the solver's? BiLO's upper level follows dJ/dθ through the
network's θ input, so a network that is close to u at θ0 but has not learnt how u moves with θ
sends θ the wrong way (docs/gbm.md, "The network's θ-gradient"). This check puts that
gradient next to central differences of the same misfit computed with a reference solver:

    check = theta_gradient_check(run.method, run.batch, reference_misfit)
    print(check.table())

`reference_misfit(theta)` is the likelihood's misfit of the solver's u at the observation
points, at parameters `theta` (a dict over the problem's parameters); each PDE parameter is
moved by ±step·|θ_p| (or ±step where θ_p = 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bilo.methods import Batch, Method


@dataclass(frozen=True)
class GradientCheck:
    """dJ/dθ_p from the network and from the solver's central differences, per PDE parameter."""

    names: tuple[str, ...]
    network: np.ndarray
    reference: np.ndarray

    @property
    def ratios(self) -> np.ndarray:
        """network / reference per parameter: 1 where the network has learnt ∂u/∂θ_p."""
        return self.network / self.reference

    @property
    def cosine(self) -> float:
        """Of the two gradient vectors: 1 when they point the same way."""
        return float(self.network @ self.reference
                     / (np.linalg.norm(self.network) * np.linalg.norm(self.reference)))

    def table(self) -> str:
        rows = [f"dJ/d{name}: network {n:+.4g}, solver {r:+.4g}, ratio {n / r:.3g}"
                for name, n, r in zip(self.names, self.network, self.reference, strict=True)]
        return "\n".join([*rows, f"cosine {self.cosine:.4f}"])


def theta_gradient_check(method: Method, batch: Batch,
                         reference_misfit: Callable[[dict], float],
                         step: float = 0.05) -> GradientCheck:
    """The data misfit's gradient in the PDE parameters at the method's current θ: the
    network's by autograd, the solver's by central differences of `reference_misfit`."""
    problem = method.problem
    theta = dict(zip(problem.params, method.theta.detach().cpu().tolist(), strict=True))
    (gradient,) = torch.autograd.grad(method.data_loss(batch), method.theta)
    network = gradient.detach().cpu().numpy().astype(np.float64)
    reference = []
    for name in problem.pde_params:
        h = step * abs(theta[name]) or step
        reference.append((reference_misfit({**theta, name: theta[name] + h})
                          - reference_misfit({**theta, name: theta[name] - h})) / (2 * h))
    index = [problem.params.index(name) for name in problem.pde_params]
    return GradientCheck(problem.pde_params, network[index], np.array(reference))
