"""The `bilo` command line: one entry point, one subcommand per job.

Heavy modules (torch, dolfinx) are imported inside the subcommand that needs them, so that
`bilo solve` and `bilo info` run on a machine without torch, and `bilo train` on one without
dolfinx. Bad input ends with one line on stderr and exit code 2, a diverged training with one
line and exit code 3 (its last finite checkpoint kept), SIGINT/SIGTERM with a checkpoint, one
line and exit code 130/143; `bilo gbm run` whose u_NN is not the FEM solution at its answer
exits 4 after writing everything. Set BILO_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

# the samplers' options (hmc, hmc-solver, bpinn): flag --n-chains is field n_chains, ...
_SAMPLER_FLAGS = {"n_chains": (int, "chains (default 4)"),
                  "n_samples": (int, "draws per chain after warm-up (1000)"),
                  "n_warmup": (int, "warm-up iterations: step size and mass matrix (1000)"),
                  "n_leapfrog": (int, "leapfrog steps per proposal (10)"),
                  "jitter": (float, "leapfrog count drawn in L(1 ± jitter) (0.2)"),
                  "target_accept": (float, "acceptance aimed at in warm-up (0.75)"),
                  "step_size": (float, "initial step size (default: found by doubling)"),
                  "sigma": (float, "noise level (default: the data file's)"),
                  "processes": (int, "chains in parallel processes (1)"),
                  "predictive_every": (int, "record u at every k-th draw (n_samples/100)"),
                  "lower_tol": (float, "hmc: lower-level loss per leapfrog (1.1 x trained)"),
                  "lower_cap": (int, "hmc: most lower-level steps per leapfrog (300)"),
                  "lower_lr": (float, "hmc: lower-level learning rate (the network's; x10 LoRA)"),
                  "lora_rank": (int, "hmc: fine-tune rank-r increments only (0: all)"),
                  "sigma_r": (float, "bpinn: sd of the residual pseudo-likelihood (default: "
                                     "the data's sigma)"),
                  "sigma_w": (float, "bpinn: sd of the weights' Gaussian prior (1)")}

# a write that ran out of room
_DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def _params(pairs: list[tuple[str, str]]) -> dict[str, float]:
    from solvers.common import InputError

    params = {}
    for name, value in pairs:
        try:
            params[name] = float(value)
        except ValueError:
            raise InputError(f"--param {name}={value}: not a number") from None
    return params


def cmd_solve(args) -> int:
    from bilo.problems import get_problem
    from bilo.synthetic import run_reference
    from solvers.common import InputError
    from solvers.exchange import write_solution

    problem = get_problem(args.problem)
    if problem.reference is None:
        raise InputError(f"problem '{problem.name}' declares no reference solver")
    if problem.reference.on_mesh:  # the FEM solver writes its file (and runs under MPI)
        from solvers.fem.cli import run_fem_solve

        if args.function or args.snapshots:
            raise InputError(f"{args.problem}: --function and --snapshots apply to the 1-D "
                             "problems only")
        summary = run_fem_solve(problem.reference.solver, _params(args.param), args.mesh,
                                args.out, n_ranks=args.np, n=args.nx, nt=args.nt,
                                oversubscribe=args.oversubscribe, obs=args.obs,
                                n_obs=args.n_obs, noise=args.noise, seed=args.seed)
        print(summary["line"])
        return 0
    if args.mesh or args.np != 1 or args.oversubscribe:
        raise InputError(f"{args.problem}: --mesh and --np apply to the problems solved on a "
                         "mesh only")
    data = run_reference(problem, _params(args.param), dict(args.function), nx=args.nx,
                         nt=args.nt, layout=args.obs, n_obs=args.n_obs, noise=args.noise,
                         seed=args.seed, snapshots=args.snapshots)
    path = write_solution(args.out, data)
    obs, events = data.observations, data.events
    drawn = (f"{len(events.positions)} events in {events.n_snapshots} snapshots"
             if events is not None else
             f"{len(obs.values)} observations ({obs.layout}, sigma {obs.sigma:g})")
    print(f"{data.problem}: solved with {data.provenance['solver']} "
          f"({data.provenance['resolution']}) in {data.provenance['wall_s']:.2f} s; "
          f"{drawn} -> {path}")
    return 0


def cmd_dataset(args) -> int:
    from bilo.dataset import run_dataset

    print(run_dataset(args.problem, args.grid, args.out, samples=args.samples,
                      functions=args.function, seed=args.seed, nx=args.nx, nt=args.nt,
                      n_ranks=args.np, oversubscribe=args.oversubscribe))
    return 0


def cmd_info(args) -> int:
    from solvers.datasets import KIND, describe_dataset, read_dataset
    from solvers.exchange import describe, open_h5, read_solution

    with open_h5(args.file) as h5:
        kind = h5.attrs.get("kind", "")
    if (kind.decode() if isinstance(kind, bytes) else kind) == KIND:
        print(describe_dataset(read_dataset(args.file), args.file))
    else:
        print(describe(read_solution(args.file), args.file))
    return 0


def _method_options(args, problem, method: str):
    """The method's options from the command line: every flag that names one of its fields."""
    from bilo.strategies import make_options

    overrides = {"width": args.width, "depth": args.depth,
                 "pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps,
                 "lr_net": args.lr, "lr_theta": args.lr_theta,
                 "n_res": tuple(args.n_res) if args.n_res else None, "n_reg": args.n_reg,
                 "stratified_reg": False if args.fixed_reg else None, "w_rgrad": args.w_rgrad,
                 "causal": args.causal, "settle_steps": args.settle_steps}
    values = {"theta0": _params(args.theta0) or None, "u0": args.u0, "seed": args.seed,
              "device": args.device, "w_dat": args.w_dat,
              "w_reg": args.w_reg, "checkpoint_every": args.checkpoint_every, "nx": args.nx,
              "regulariser": args.regulariser, "tv_eps": args.tv_eps, "maxiter": args.maxiter,
              "polish": args.polish, "stop_theta_tol": args.stop_theta_tol,
              "stop_lower_tol": args.stop_lower_tol, "stop_window": args.stop_window,
              "dataset": args.dataset, "pretrained": args.pretrained,
              **{name: getattr(args, name) for name in _SAMPLER_FLAGS}}
    return make_options(problem, method, args.preset, overrides, **values)


def cmd_train(args) -> int:
    from bilo.problems import get_problem
    from bilo.strategies import fit

    problem = get_problem(args.problem)
    options = _method_options(args, problem, args.method)
    summary = fit(problem, args.data, args.method, args.out, options, resume=args.resume,
                  overwrite=args.overwrite, validate=not args.no_validate).summary
    found = ", ".join([f"{k}={v:.5g}" for k, v in summary["params"].items()]
                      + [f"{k}(x)" for k in summary["rel_err"] if k not in summary["params"]])
    print(f"wrote {args.out}/summary.json: {found} in {summary['wall_s']:.1f} s "
          f"on {summary['device']}")
    return 0


def cmd_compare(args) -> int:
    from bilo.compare import compare
    from solvers.common import InputError

    try:
        w_dats = tuple(float(w) for w in args.w_dat.split(","))
    except ValueError:
        raise InputError(f"--w-dat {args.w_dat}: expected numbers separated by commas") from None
    compare(args.problem, args.data, [m.strip() for m in args.methods.split(",") if m.strip()],
            args.out, seeds=args.seeds, w_dats=w_dats, preset=args.preset, u0=args.u0,
            w_reg=args.w_reg, overwrite=args.overwrite,
            method_options={"dataset": args.dataset,
                            **{name: getattr(args, name) for name in _SAMPLER_FLAGS}})
    return 0


def cmd_gbm_synth(args) -> int:
    from apps.gbm.synth import run_synth

    print(run_synth(args))
    return 0


def cmd_gbm_run(args) -> int:
    from apps.gbm.pipeline import run_from_arguments

    return run_from_arguments(args)


def cmd_gbm_cohort(args) -> int:
    from apps.gbm.cohort import run_cohort

    return run_cohort(args)


def cmd_validate(args) -> int:
    from bilo.validate import validate

    validate(args.run_dir)
    return 0


def cmd_playground(args) -> int:
    from apps import playground

    if args.export:
        files = playground.export(args.export)
        print(f"bilo playground: wrote {len(files)} files to {args.export} (open index.html "
              "from any static web host)")
        return 0
    try:
        server = playground.make_server(args.port)
    except OSError as exc:  # the port is taken, or not ours to open
        from solvers.common import InputError

        raise InputError(f"--port {args.port}: {exc.strerror}") from None
    print(f"BiLO playground at http://127.0.0.1:{server.server_address[1]}/index.html",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_posterior_grid(args) -> int:
    import time
    from pathlib import Path

    from bilo.posterior import grid_posterior, grid_summary, write_grid_posterior
    from bilo.problems import get_problem
    from bilo.strategies import load_data
    from solvers.common import InputError

    problem = get_problem(args.problem)
    if len(problem.params) not in (1, 2):
        raise InputError(f"problem '{problem.name}' has {len(problem.params)} parameters; the "
                         "grid posterior takes 1 or 2 (use --method hmc-solver)")
    out = Path(args.out)
    if (out / "grid_posterior.h5").exists() and not args.overwrite:
        raise InputError(f"{out / 'grid_posterior.h5'}: exists; pass --overwrite to replace it")
    data, data_path = load_data(problem, args.data)
    nodes = args.nodes or (401 if len(problem.params) == 1 else 61)
    started = time.perf_counter()
    grid = grid_posterior(problem, data, nodes, sigma=args.sigma, nx=args.nx,
                          width=args.width, progress=True)
    summary = {"problem": problem.name, "data": data_path, **grid_summary(grid),
               "sigma": args.sigma, "nx": args.nx, "width_sds": args.width,
               "wall_s": round(time.perf_counter() - started, 3)}
    write_grid_posterior(out, grid, summary)
    for name, axis in zip(grid.names, grid.axes, strict=True):
        print(f"{name}: mean {grid.mean[name]:.6g}, sd {grid.sd[name]:.4g}, mode "
              f"{grid.mode[name]:.6g} (nodes {axis[0]:.4g} .. {axis[-1]:.4g})")
    if grid.corr is not None:
        print(f"correlation {grid.corr:.4f}")
    print(f"{grid.n_evaluations} solves in {summary['wall_s']:.1f} s; wrote {out}/"
          "grid_posterior.h5, grid_summary.json, grid_posterior.png")
    return 0


def _problem_line(problem) -> str:
    spec = problem.reference
    params = ", ".join(f"{k}={v:g}" for k, v in {**spec.defaults, **problem.constants}.items())
    return f"{problem.name}: {spec.summary} (params {params or 'none'})"



def build_parser() -> argparse.ArgumentParser:
    from bilo.problems import PROBLEMS
    from bilo.strategies import METHODS, problems_with_adjoint

    problems = [cls() for cls in PROBLEMS.values()]

    parser = argparse.ArgumentParser(
        prog="bilo", description="PDE inverse problems with BiLO, checked against FDM/FEM "
                                 "reference solvers and the adjoint method.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    solve = commands.add_parser(
        "solve", help="reference solution + synthetic observations -> HDF5",
        description="Solve a problem's reference solver and write the solution and synthetic "
                    "observations (optionally noisy) to one HDF5 file; the problems on a mesh "
                    "run dolfinx FEM, also under MPI (--mesh, --np).",
        epilog="problems: " + "; ".join(_problem_line(p) for p in problems if p.reference))
    solve.add_argument("problem", choices=sorted(PROBLEMS))
    solve.add_argument("--param", action="append", type=_key_value, default=[],
                       metavar="NAME=VALUE", help="PDE parameter (repeatable)")
    solve.add_argument("--function", action="append", type=_key_value, default=[],
                       metavar="NAME=EXPR", help="input function as a numpy expression in x, "
                                                 "e.g. f='sin(pi*x)' (repeatable)")
    solve.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                       help="std of Gaussian noise added to the observations (default 0)")
    solve.add_argument("--seed", type=int, default=None, help="noise (or events) seed")
    solve.add_argument("--snapshots", type=int, default=None, metavar="M",
                       help="steady 1-D problems: instead of observations, draw M snapshots of "
                            "events of the Poisson process whose intensity is u (e.g. "
                            "singular: mRNA positions)")
    solve.add_argument("--obs", default=None, metavar="LAYOUT",
                       help="observation layout: grid (n x n space-time grid) or final "
                            "(n points at the final time) for time-dependent problems, "
                            "points for steady ones; darcy: vertices (default) or grid "
                            "(n x n over the mesh)")
    solve.add_argument("--n-obs", type=int, default=None, metavar="N",
                       help="observation points per axis")
    solve.add_argument("--nx", type=int, default=None,
                       help="spatial nodes of the solver (FEM: squares per side of the unit "
                            "square)")
    solve.add_argument("--mesh", default=None, metavar="MESH.xdmf",
                       help="FEM problems: mesh written by meshes.write_mesh (default: unit "
                            "square)")
    solve.add_argument("--np", type=int, default=1, metavar="N",
                       help="FEM problems: MPI ranks (runs the solve under mpirun)")
    solve.add_argument("--oversubscribe", action="store_true",
                       help="FEM problems: allow --np above the core count (passed to mpirun)")
    solve.add_argument("--nt", type=int, default=None, help="stored output times")
    solve.add_argument("--out", required=True, metavar="FILE.h5")
    solve.set_defaults(run=cmd_solve)

    dataset = commands.add_parser(
        "dataset", help="the reference solver over a parameter set -> one HDF5 dataset",
        description="Runs a problem's reference solver at every point of a parameter grid "
                    "(--grid for each parameter; the Cartesian product) or for N draws of a "
                    "Gaussian random field (--samples, --function NAME=\"grf(...)\") and "
                    "writes parameters, u on the solver grid and provenance to one HDF5 file "
                    "(chunked, compressed), the training set of --method deeponet. "
                    "See docs/deeponet.md.")
    dataset.add_argument("problem", choices=sorted(PROBLEMS))
    dataset.add_argument("--grid", action="append", default=[],
                         metavar="NAME=START:STEP:STOP",
                         help="values of a parameter, both ends included, or NAME=VALUE "
                              "(repeatable; every parameter needs one)")
    dataset.add_argument("--samples", type=int, default=None, metavar="N",
                         help="unknown functions: number of random draws")
    dataset.add_argument("--function", action="append", type=_key_value, default=[],
                         metavar='NAME="grf(...)"',
                         help="unknown function's distribution: grf(length_scale=L, "
                              "variance=V, mean=M, left=A, right=B) (left/right: f(0), f(1))")
    dataset.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    dataset.add_argument("--nx", type=int, default=None,
                         help="solver nodes in x (default: the problem's)")
    dataset.add_argument("--nt", type=int, default=None,
                         help="stored output times (default: the problem's)")
    dataset.add_argument("--np", type=int, default=1, metavar="N",
                         help="MPI ranks (mpirun; the same file as one rank)")
    dataset.add_argument("--oversubscribe", action="store_true",
                         help="allow --np above the core count (passed to mpirun)")
    dataset.add_argument("--out", required=True, metavar="FILE.h5")
    dataset.set_defaults(run=cmd_dataset)

    train = commands.add_parser(
        "train", help="infer parameters from data with BiLO, PINN or the adjoint",
        description="BiLO and PINN pre-train at the initial guess, then fine-tune (BiLO: "
                    "simultaneous lower/upper-level descent; PINN: L_res + w_dat L_dat); the "
                    "adjoint fits the problem's solver by L-BFGS-B. Writes result.h5, "
                    "summary.json and figures to --out, then validates against the reference "
                    "solver; network runs checkpoint for --resume.",
        epilog="problems: " + ", ".join(p.name for p in problems if p.has_network)
               + "; with an adjoint: " + ", ".join(problems_with_adjoint()))
    train.add_argument("problem", help="problem name (an unknown name lists them all)")
    train.add_argument("--data", required=True, metavar="FILE.h5",
                       help="observations, as written by `bilo solve`")
    train.add_argument("--method", default="bilo", choices=list(METHODS),
                       help="bilo (default), pinn, adjoint (solver + discrete adjoint + "
                            "L-BFGS-B), hmc (B-BiLO: posterior of θ), hmc-solver (the "
                            "reference posterior with the solver), bpinn (B-PINN: HMC over "
                            "θ and the PINN's weights) or deeponet (a DeepONet pre-trained on "
                            "--dataset, inference through it)")
    train.add_argument("--preset", default="quick", help="quick (CPU smoke run) or paper")
    train.add_argument("--out", required=True, metavar="RUN_DIR")
    train.add_argument("--theta0", action="append", type=_key_value, default=[],
                       metavar="NAME=VALUE", help="initial guess (default: the problem's)")
    train.add_argument("--u0", default=None, metavar="FILE.h5|auto",
                       help="numerical solution at the initial guess to fit in pre-training "
                            "(auto: solve it now)")
    train.add_argument("--w-rgrad", type=float, default=None,
                       help="BiLO residual-gradient weight (default: the preset's; 0.1 "
                            "for most problems)")
    train.add_argument("--causal", type=float, default=None, metavar="EPS",
                       help="causal training of the residual in time with this ε (problems "
                            "with a time t; default: the preset's, mostly off)")
    train.add_argument("--w-dat", type=float, default=None, help="PINN data weight (default 1)")
    train.add_argument("--w-reg", type=float, default=None,
                       help="weight of the unknown function's regulariser w_reg·∫f'^2 "
                            "(default: the problem's, e.g. poisson 1e-3, heat 1e-4)")
    train.add_argument("--regulariser", default=None, metavar="NAME",
                       help="adjoint on darcy: tv (smoothed total variation "
                            "∫sqrt(|∇A|²+ε²), the default) or h1 (∫|∇A|²)")
    train.add_argument("--tv-eps", type=float, default=None, metavar="EPS",
                       help="adjoint on darcy: ε of the smoothed TV (default 1)")
    train.add_argument("--maxiter", type=int, default=None,
                       help="adjoint: most L-BFGS-B iterations (default 5000)")
    train.add_argument("--stop-theta-tol", type=float, default=None, metavar="TOL",
                       help="bilo/pinn: stop fine-tuning once θ changes by less than TOL "
                            "(relative) over --stop-window steps")
    train.add_argument("--stop-lower-tol", type=float, default=None, metavar="TOL",
                       help="bilo/pinn: ... and the lower-level loss stays below TOL")
    train.add_argument("--stop-window", type=int, default=None, metavar="STEPS",
                       help="the window of the convergence rule (500)")
    for name, (kind, text) in _SAMPLER_FLAGS.items():
        train.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    train.add_argument("--dataset", default=None, metavar="DS.h5",
                       help="deeponet: the dataset it pre-trains on (`bilo dataset`)")
    train.add_argument("--pretrained", default=None, metavar="RUN_DIR",
                       help="deeponet: take the operator of an earlier run on the same dataset "
                            "instead of pre-training")
    train.add_argument("--polish", type=int, default=None, metavar="ITERATIONS",
                       help="bilo/pinn: finish with this many L-BFGS-B iterations of the "
                            "solver and its adjoint from the network's answer; both reported")
    train.add_argument("--nx", type=int, default=None,
                       help="adjoint: solver nodes (default: the data's reference grid)")
    train.add_argument("--pretrain-steps", type=int, default=None)
    train.add_argument("--steps", type=int, default=None, help="fine-tuning steps")
    train.add_argument("--settle-steps", type=int, default=None,
                       help="bilo: then this many steps of the network alone on the residual at "
                            "the answer, unless the stop rule ended fine-tuning (default: the "
                            "preset's, mostly 0)")
    train.add_argument("--lr", type=float, default=None, help="network learning rate")
    train.add_argument("--lr-theta", type=float, default=None, help="parameter learning rate")
    train.add_argument("--width", type=int, default=None)
    train.add_argument("--depth", type=int, default=None, help="hidden layers")
    train.add_argument("--n-res", type=int, nargs="+", default=None,
                       help="residual points per coordinate axis")
    train.add_argument("--n-reg", type=int, default=None,
                       help="unknown functions: points for the regulariser and f0 fit (101)")
    train.add_argument("--fixed-reg", action="store_true",
                       help="keep those points evenly spaced (the paper) instead of redrawing "
                            "them each step, one per cell of their grid")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR's checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run RUN_DIR holds (refused otherwise)")
    train.add_argument("--no-validate", action="store_true",
                       help="skip the reference solve at the inferred parameters")
    train.set_defaults(run=cmd_train)

    compare = commands.add_parser(
        "compare", help="run several methods on the same data; table + figure",
        description="Runs each method on the same HDF5 data and writes comparison.csv, "
                    "comparison.md and comparison.png (parameters against wall time) in --out.")
    compare.add_argument("problem")
    compare.add_argument("--data", required=True, metavar="FILE.h5")
    compare.add_argument("--methods", default="adjoint,bilo,pinn",
                         help="comma-separated, from: " + ", ".join(METHODS)
                              + " (default adjoint,bilo,pinn)")
    compare.add_argument("--seeds", type=int, default=1,
                         help="network seeds per trained method (default 1)")
    compare.add_argument("--w-dat", default="1,10,100", help="PINN data weights (default 1,10,100)")
    compare.add_argument("--preset", default="quick")
    compare.add_argument("--w-reg", type=float, default=None,
                         help="unknown-function regulariser weight for every method (default: "
                              "each method's own)")
    compare.add_argument("--u0", default="auto", help="u0 for pre-training (default auto)")
    compare.add_argument("--overwrite", action="store_true",
                         help="replace the runs DIR holds (refused otherwise)")
    compare.add_argument("--dataset", default=None, metavar="DS.h5",
                         help="deeponet: the dataset it pre-trains on (`bilo dataset`)")
    for name, (kind, text) in _SAMPLER_FLAGS.items():
        compare.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    compare.add_argument("--out", required=True, metavar="DIR")
    compare.set_defaults(run=cmd_compare)

    validate = commands.add_parser(
        "validate", help="re-solve at the inferred parameters, compare u_NN with it")
    validate.add_argument("run_dir", metavar="RUN_DIR")
    validate.set_defaults(run=cmd_validate)

    grid = commands.add_parser(
        "posterior-grid", help="the solver's posterior of 1 or 2 parameters on a grid",
        description="Evaluates π(θ | d) ∝ exp(−n·J(θ)/(2σ²)) p(θ) with the reference solver at "
                    "every node of a grid over the mode ± WIDTH Laplace sds and normalises it "
                    "by the trapezoidal rule: exact up to the grid, the reference the samplers "
                    "are checked against. Writes grid_posterior.h5, grid_summary.json and "
                    "grid_posterior.png to OUT. See docs/bayes.md.",
        epilog="problems with an adjoint: " + ", ".join(problems_with_adjoint()))
    grid.add_argument("problem", choices=sorted(PROBLEMS))
    grid.add_argument("--data", required=True, metavar="FILE.h5")
    grid.add_argument("--out", required=True, metavar="DIR")
    grid.add_argument("--nodes", type=int, default=None,
                      help="nodes per axis (default 401 for one parameter, 61 for two)")
    grid.add_argument("--width", type=float, default=8.0,
                      help="half-width of the grid in Laplace sds (default 8)")
    grid.add_argument("--sigma", type=float, default=None,
                      help="noise level (default: the data file's)")
    grid.add_argument("--nx", type=int, default=None,
                      help="solver nodes (default: the data's reference grid)")
    grid.add_argument("--overwrite", action="store_true", help="replace an earlier grid in OUT")
    grid.set_defaults(run=cmd_posterior_grid)

    gbm = commands.add_parser("gbm", help="glioblastoma patient pipeline: synth, run, cohort")
    gbm_commands = gbm.add_subparsers(dest="gbm_command", required=True, metavar="COMMAND")
    synth = gbm_commands.add_parser(
        "synth", help="synthetic patient on the ICBM152 brain (FEM forward model)",
        description="Draws a tumour centre in white matter, growth parameters and thresholds "
                    "from the seed (unless fixed by the options below), runs the FEM forward "
                    "model and writes a BraTS-style patient folder with truth.json. "
                    "See docs/gbm.md.")
    from apps.gbm.synth import add_synth_arguments

    add_synth_arguments(synth)  # options and their checks: apps/gbm/synth.py, docs/gbm.md
    synth.set_defaults(run=cmd_gbm_synth)
    gbm_run = gbm_commands.add_parser(
        "run", help="fit D, rho and segmentation thresholds to a patient; DICE and report",
        description="Patient folder (seg, wm, gm NIfTI) -> mesh -> scales -> FEM at the "
                    "initial guess -> BiLO -> FEM at the inferred parameters -> DICE, "
                    "summary.json, report.png, density NIfTI, XDMF.")
    from apps.gbm.pipeline import add_run_arguments

    add_run_arguments(gbm_run)  # options and their checks: apps/gbm/pipeline.py, docs/gbm.md
    gbm_run.set_defaults(run=cmd_gbm_run)
    cohort = gbm_commands.add_parser(
        "cohort", help="bilo gbm run on every patient folder under DIR; one CSV table",
        description="Runs `bilo gbm run` on every patient folder under DIR (--np at a time, "
                    "one per MPI worker rank, through mpi4py.futures), each into OUT/<name>/, "
                    "and writes OUT/cohort.csv (parameters, intervals, DICE, coverage). "
                    "Resumable: patients with OUT/<name>/summary.json are not run again.")
    from apps.gbm.cohort import add_cohort_arguments

    add_cohort_arguments(cohort)  # options: apps/gbm/cohort.py, docs/gbm.md
    cohort.set_defaults(run=cmd_gbm_cohort)

    playground = commands.add_parser(
        "playground", help="the BiLO playground page: serve it on localhost or export it",
        description="Serve the BiLO playground (apps/playground, a static page that trains "
                    "BiLO and a PINN in the browser) with Python's http.server on "
                    "127.0.0.1 (it prints the URL; Ctrl-C stops), or copy the site to DIR.")
    playground.add_argument("--port", type=int, default=8000,
                            help="port on 127.0.0.1 (default 8000; 0: any free port)")
    playground.add_argument("--export", metavar="DIR", default=None,
                            help="write the static site to DIR instead of serving it")
    playground.set_defaults(run=cmd_playground)

    info = commands.add_parser("info", help="print what an HDF5 file holds")
    info.add_argument("file", metavar="FILE.h5")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from solvers.common import Diverged, InputError, Interrupted

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as exc:
        if os.environ.get("BILO_DEBUG"):
            raise
        print(f"bilo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Diverged as exc:
        if os.environ.get("BILO_DEBUG"):
            raise
        print(f"bilo {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"bilo {args.command}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # before a loop that checkpoints was running
        print(f"bilo {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if os.environ.get("BILO_DEBUG") or exc.errno not in _DISK_ERRORS:
            raise
        print(f"bilo {args.command}: error: {exc.filename or 'output'}: {exc.strerror}: the disk "
              "is full or a file size limit is set (ulimit -f); files already written are "
              "intact", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
