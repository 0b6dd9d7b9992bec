"""Plain numpy misfits for the adjoint tests (the `misfit` objects the adjoints take), written
independently of `bilo.likelihoods` so that the likelihood objects are checked against them.
Tests import this module as `misfits` (pytest puts tests/ on sys.path)."""

import numpy as np


class MeanSquares:
    """mean((p - d)^2) and its gradient 2 (p - d) / n."""

    def value(self, predicted, observed):
        return float(np.mean((predicted - observed) ** 2))

    def gradient(self, predicted, observed):
        return 2.0 * (predicted - observed) / predicted.size


class GaussianLogLikelihood:
    """sum((p - d)^2) / (2 sigma^2) and its gradient (p - d) / sigma^2."""

    def __init__(self, sigma):
        self.sigma = sigma

    def value(self, predicted, observed):
        return float(np.sum((predicted - observed) ** 2) / (2.0 * self.sigma**2))

    def gradient(self, predicted, observed):
        return (predicted - observed) / self.sigma**2
