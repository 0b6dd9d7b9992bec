"""The contour likelihood of segmentation masks (`bilo.likelihoods.MaskContours`): a pixel is
labelled inside with probability F(d/σ), d = (u − u_c)/|∇u| its signed distance from the
contour, F the logistic cdf of unit sd. Checked on radial profiles on a pixel grid, against
closed forms: |∇u| by the grid's differences, d against the exact distance, and the property
the GBM posterior needs from it (docs/gbm.md): hard masks of one contour do not favour the
steeper of two profiles, as a link in u (sigmoid(20(u − u_c))) does."""

import numpy as np
import pytest
import torch

from bilo.likelihoods import MaskContours, SegmentationMasks, grid_neighbours

H = 0.1  # pixel spacing
RADIUS = 1.0  # the observed contour


def _grid(n=41):
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ij = np.column_stack([i.ravel(), j.ravel()])
    xy = (ij - (n - 1) / 2) * H
    return ij, xy, np.linalg.norm(xy, axis=1)


def test_grid_neighbours_of_an_l_shape():
    """Pixels (0,0), (1,0), (1,1): each one's neighbours along −i, +i, −j, +j, −1 if absent."""
    got = grid_neighbours([(0, 0), (1, 0), (1, 1)])
    assert got.tolist() == [[-1, 1, -1, -1], [0, -1, -1, 2], [-1, -1, 1, -1]]


def test_gradient_and_distance_of_a_quadratic_profile():
    """u = 1 − r²/4: |∇u| = r/2, central differences of a quadratic are exact inside the grid;
    d = (u − u_c)/|∇u| is the distance to the circle u = u_c to first order, so at the contour's
    pixels (|r − 1| < H) it is R − r up to O((r − R)²)."""
    ij, xy, r = _grid()
    u = 1.0 - r**2 / 4.0
    masks = MaskContours(thresholds={1: "c"}, neighbours=grid_neighbours(ij), spacing=(H, H),
                         sd=H, floor=0.0)
    interior = (np.abs(xy) < (20 - 0.5) * H).all(axis=1) & (r > 0)
    grad = masks._gradient_norm(u)
    np.testing.assert_allclose(grad[interior], r[interior] / 2.0, rtol=1e-12)
    c = 0.75  # the circle r = 1
    near = interior & (np.abs(r - RADIUS) < H)
    distance = (u[near] - c) / grad[near]
    assert np.max(np.abs(distance - (RADIUS - r[near]))) < 0.6 * H**2


def test_hard_masks_do_not_favour_the_steeper_profile():
    """Two linear profiles u = c + k(R − r) with k = 1 and k = 4 draw the same hard mask
    r < R at c = 0.5. With the contour likelihood d = (R − r)/|∇_h r| for both, so their best
    −log L (over u_c) agree to 1e-9 without the floor on |∇u|, and to 1 % with the default floor
    (0.01 per pixel: it shortens d by 0.5 % at k = 1); with sigmoid(20(u − u_c)) the steeper
    profile is preferred by about 40 nats (measured 39.5)."""
    ij, xy, r = _grid(40)  # no pixel at r = 0, where a cone has no gradient
    observed = (r < RADIUS).astype(np.float64)
    link = SegmentationMasks(thresholds={1: "c"}, slope=20.0, noise="bernoulli")
    thresholds = np.linspace(0.3, 0.7, 401)

    def best(likelihood, k):
        u = 0.5 + k * (RADIUS - r)
        return min(likelihood.negative_log(u, observed, {"c": c}) for c in thresholds)

    for floor, tolerance in ((0.0, 1e-9), (0.01, 1e-2)):
        contours = MaskContours(thresholds={1: "c"}, neighbours=grid_neighbours(ij),
                                spacing=(H, H), sd=H, floor=floor)
        assert best(contours, 1.0) == pytest.approx(best(contours, 4.0), rel=tolerance)
    assert best(link, 1.0) - best(link, 4.0) > 30.0  # nats in favour of the steeper


def test_torch_matches_numpy_and_differentiates():
    """The same −log L in float64 torch as in numpy (torch's softplus returns x beyond x = 20:
    1e-10), and its gradient in u_c against a finite difference."""
    ij, xy, r = _grid(21)
    u = np.exp(-r**2)
    observed = (r < 0.6).astype(np.float64) + (r < 0.3)
    masks = MaskContours(thresholds={1: "a", 2: "b"}, neighbours=grid_neighbours(ij),
                         spacing=(H, H), sd=H)
    theta = {"a": 0.7, "b": 0.9}
    expected = masks.negative_log(u, observed, theta)
    u_t = torch.tensor(u, requires_grad=True)
    theta_t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
               for k, v in theta.items()}
    got = masks.negative_log(u_t, torch.tensor(observed), theta_t)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-10)
    got.backward()
    assert torch.isfinite(u_t.grad).all() and float(theta_t["a"].grad) != 0.0
    step = 1e-6
    shifted = masks.negative_log(u, observed, {**theta, "a": theta["a"] + step})
    assert float(theta_t["a"].grad) == pytest.approx((shifted - expected) / step, rel=1e-4)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="neighbours"):
        MaskContours(thresholds={1: "c"}, neighbours=np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="rows of u"):
        MaskContours(thresholds={1: "c"}, neighbours=grid_neighbours([(0, 0)])).negative_log(
            np.zeros(2), np.zeros(2), {"c": 0.5})
