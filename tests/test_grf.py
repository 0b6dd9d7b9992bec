"""The Gaussian-random-field sampler used for synthetic unknown functions."""

import numpy as np

from solvers.grf import grf, grf_samples


def test_unconditioned_field_has_the_kernel_statistics(report):
    """4000 samples, variance 0.3, length scale 0.1, 201 points: pointwise variance within 8%
    of 0.3 and the correlation at lag ℓ within 0.05 of exp(−1/2) = 0.607."""
    x = np.linspace(0, 1, 201)
    samples = grf_samples(4000, length_scale=0.1, variance=0.3, seed=1, x=x)
    variance = samples.var(axis=0).mean()
    lag = 20  # 20 grid steps of 0.005 = 0.1
    corr = np.mean([np.corrcoef(samples[:, i], samples[:, i + lag])[0, 1]
                    for i in range(0, 180, 20)])
    report(f"variance {variance:.4f} (0.3), correlation at lag ℓ {corr:.4f} (0.6065)")
    assert abs(variance / 0.3 - 1) < 0.08
    assert abs(corr - np.exp(-0.5)) < 0.05


def test_boundary_conditioning_and_grid_independence():
    """Conditioned on f(0) = 1, f(1) = 1: the end values are exact; the conditional variance
    vanishes at the ends and is largest inside. The same seed gives the same function on a
    coarse and a fine grid (grid-independent sampling)."""
    samples = grf_samples(500, length_scale=0.2, variance=0.05, boundary=(1.0, 1.0), seed=2)
    assert np.all(samples[:, 0] == 1.0) and np.all(samples[:, -1] == 1.0)
    spread = samples.std(axis=0)
    assert spread[5] < 0.25 * spread[500]
    coarse = grf(np.linspace(0, 1, 11), seed=4)
    fine = grf(np.linspace(0, 1, 1001), seed=4)
    np.testing.assert_allclose(coarse, fine[::100], atol=1e-12)
    assert coarse[0] == 0.0 and coarse[-1] == 0.0
