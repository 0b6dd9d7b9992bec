"""The FEM grid posterior of a one-scan patient under mask likelihoods (docs/gbm.md, "The mask
likelihood"): FEM u(1) on a log-spaced (D, ρ) grid with the pipeline's seed and scales, the
thresholds integrated out on a grid (each mask depends only on its own), the sampler's priors.

    python docs/scripts/gbm_grid_posterior.py data/patient_default --out grid.npz
    python docs/scripts/gbm_grid_posterior.py data/patient_default --D 0.0156 0.125 4 --out low.npz
    python docs/scripts/gbm_grid_posterior.py data/patient_default --load grid.npz low.npz

Prints, per likelihood, the posterior mean and sd of log D, log ρ, log(D/ρ), log(Dρ) and
z = (truth − mean)/sd when the folder has a truth.json (`bilo gbm synth`).
"""

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from apps.gbm.patient import brain_mask, load_patient, tissue_P
from apps.gbm.pipeline import REGION_RADIUS, _dimensionless
from apps.gbm.problem import BAYES_PARAMETERS
from apps.gbm.scales import patient_scales
from bilo.likelihoods import MaskContours, SegmentationMasks, grid_neighbours


def solve_grid(patient_dir, d_values, rho_values) -> dict:
    from mpi4py import MPI

    from meshes import mesh_from_mask
    from meshes.interpolation import P1Interpolator
    from solvers.fem import solve_fkpp2d
    from solvers.fem.reaction_diffusion import gaussian_initial_condition

    patient = load_patient(patient_dir)
    whole = brain_mask(patient)
    mesh = mesh_from_mask(whole, patient.affine2d, vertex_images={"P": tissue_P(patient)})
    scales = patient_scales(patient)
    distance = np.linalg.norm(_dimensionless(patient.pixel_centres_mm(), scales), axis=-1)
    region = whole & (distance < max(REGION_RADIUS, distance[patient.wt].max() + 1.0))
    points = patient.pixel_centres_mm(region)
    to_pixels = P1Interpolator(mesh.mesh.vertices, mesh.mesh.cells)
    u0 = gaussian_initial_condition(mesh.mesh.vertices, scales.centroid_mm, scales.ic_width_mm,
                                    scales.ic_amplitude)
    u = np.zeros((len(d_values), len(rho_values), len(points)))
    for a, d in enumerate(d_values):
        for b, rho in enumerate(rho_values):
            solution = solve_fkpp2d(mesh, mesh.vertex_fields["P"], d * scales.D_bar_mm2,
                                    rho * scales.rho_bar, u0, [0.0, 1.0], n_steps=50,
                                    comm=MPI.COMM_SELF, P_at="vertex")
            u[a, b] = to_pixels(solution.u[-1], points)
            print(f"D {d:.3f} rho {rho:.3f}", flush=True)
    codes = (patient.wt.astype(int) + patient.tc.astype(int))[region]
    return {"Ds": d_values, "rhos": rho_values, "U": u, "obs": codes,
            "ij": np.argwhere(region)}


def _log_widths(values) -> np.ndarray:
    """Trapezoid widths of the nodes in log space (a grid need not be evenly spaced)."""
    edges = np.log(values)
    gaps = np.diff(edges)
    return 0.5 * (np.concatenate([gaps, [0.0]]) + np.concatenate([[0.0], gaps]))


def _merged(paths) -> dict:
    """Saved grids with the same ρ values, joined along D."""
    grids = [dict(np.load(path)) for path in paths]
    order = np.argsort(np.concatenate([g["Ds"] for g in grids]))
    return {**grids[0], "Ds": np.concatenate([g["Ds"] for g in grids])[order],
            "U": np.concatenate([g["U"] for g in grids])[order]}


def grid_posterior(grid: dict, likelihood_of) -> np.ndarray:
    """Posterior weights over the (D, ρ) grid; `likelihood_of(label)` is a likelihood of one
    mask with threshold parameter "c"."""
    priors = {p.name: p.prior for p in BAYES_PARAMETERS}
    thresholds = np.linspace(0.01, 0.99, 197)
    log_post = np.zeros(grid["U"].shape[:2])
    for label, name in ((1, "th_wt"), (2, "th_tc")):
        likelihood = likelihood_of(label)
        log_prior = np.array([float(priors[name].log_prob(c)) for c in thresholds])
        for index in np.ndindex(*log_post.shape):
            terms = log_prior - np.array([likelihood.negative_log(
                grid["U"][index], grid["obs"], {"c": c}) for c in thresholds])
            top = terms.max()
            log_post[index] += top + np.log(np.exp(terms - top).sum())
    for axis, name in enumerate(("D", "rho")):  # density in log space, times the node's width
        values = grid["Ds" if name == "D" else "rhos"]
        shape = [1, 1]
        shape[axis] = -1
        log_post += np.reshape([float(priors[name].log_prob(v)) + np.log(v) for v in values]
                               + np.log(_log_widths(values)), shape)
    weights = np.exp(log_post - log_post.max())
    return weights / weights.sum()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("patient_dir")
    parser.add_argument("--out", help="save the FEM grid here")
    parser.add_argument("--load", nargs="+", help="saved FEM grids (the same ρ values, "
                        "joined along D) instead of solving")
    parser.add_argument("--D", nargs=3, type=float, default=(0.25, 4.0, 9))
    parser.add_argument("--rho", nargs=3, type=float, default=(0.55, 1.3, 7))
    parser.add_argument("--sd", nargs="*", type=float, default=[0.5, 1.0, 2.0],
                        help="contour sds in pixels")
    args = parser.parse_args()
    if args.load:
        grid = _merged(args.load)
    else:
        grid = solve_grid(args.patient_dir, np.geomspace(*args.D[:2], int(args.D[2])),
                          np.geomspace(*args.rho[:2], int(args.rho[2])))
        if args.out:
            np.savez(args.out, **grid)
    neighbours = grid_neighbours(grid["ij"])
    models = {"sigmoid(20(u - u_c))": lambda label: SegmentationMasks(
        thresholds={label: "c"}, slope=20.0, noise="bernoulli")}
    for sd in args.sd:
        models[f"contours, sd {sd:g} px"] = functools.partial(
            lambda label, sd: MaskContours(thresholds={label: "c"}, neighbours=neighbours,
                                           sd=sd), sd=sd)
    truth_path = Path(args.patient_dir) / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else None
    log_d, log_rho = np.meshgrid(np.log(grid["Ds"]), np.log(grid["rhos"]), indexing="ij")
    for name, likelihood_of in models.items():
        weights = grid_posterior(grid, likelihood_of)
        print(f"== {name}")
        for label, q, true in (
                ("log D", log_d, truth and np.log(truth["D_as_estimated"])),
                ("log rho", log_rho, truth and np.log(truth["rho_as_estimated"])),
                ("log D/rho", log_d - log_rho, truth and np.log(
                    truth["D_as_estimated"] / truth["rho_as_estimated"])),
                ("log D*rho", log_d + log_rho, truth and np.log(
                    truth["D_as_estimated"] * truth["rho_as_estimated"]))):
            mean = float((weights * q).sum())
            sd = float(np.sqrt((weights * (q - mean) ** 2).sum()))
            z = f" truth {true:+.3f} z {(true - mean) / sd:+.2f}" if truth else ""
            print(f"  {label:10s} mean {mean:+.3f} sd {sd:.3f}{z}")


if __name__ == "__main__":
    main()
