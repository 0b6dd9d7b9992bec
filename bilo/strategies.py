"""Methods as strategies over one problem declaration: `fit(problem, data, method, options)`.

Every method implements `Strategy.fit(problem, data, options, out) -> Result` with its own
options dataclass, and every result goes through one writer (`bilo.results.write_result`) and
one validation (`bilo.validate`):

* `bilo` and `pinn` train the network surrogate (`bilo.train.Run`);
* `adjoint` fits the problem's declared adjoint (`Problem.adjoint`) by L-BFGS-B.

The command line, `bilo compare` and the applications pick a method by name from `METHODS`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bilo.model import Problem, Settings
from bilo.results import (
    FUNCTION_POINTS,
    Result,
    reference_points,
    relative_errors,
    relative_l2,
    write_result,
)
from bilo.runs import check_resume, run_folder
from solvers.common import InputError, write_json_atomic
from solvers.exchange import SolutionFile, read_solution


@dataclass
class Options:
    """What every method takes: the initial guess (default: the problem's) and the
    regulariser weight of the unknown functions (default: each function's declared w_reg)."""

    theta0: dict[str, float] = field(default_factory=dict)
    w_reg: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not callable(v)}

    def step_options(self) -> dict:
        return {}

    def check(self, problem: Problem) -> None:
        """One line for the first invalid value: every number finite and inside its range (zero
        never means "default"), θ0 inside the declared bounds."""
        check_in_bounds(problem, self.theta0, "--theta0")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        settings = values.pop("settings", None)
        if isinstance(settings, Settings):
            if settings.causal is not None and "t" not in problem.coords:
                raise InputError(f"--causal: problem '{problem.name}' has no time coordinate t")
            values.update(asdict(settings))
        for name, (lo, hi) in _LIMITS.items():
            value = values.get(name)
            for v in (value if isinstance(value, tuple) else (value,)):
                if v is None or isinstance(v, bool):
                    continue
                if not (np.isfinite(v) and lo <= v <= hi):
                    flag = _FLAGS.get(name, name.replace("_", "-"))
                    raise InputError(f"--{flag} {v}: must be a finite number in "
                                     f"[{lo:g}, {hi:g}]")


def check_in_bounds(problem: Problem, values: dict[str, float], label: str) -> None:
    """One line, starting with `label`, for the first value outside its parameter's bounds."""
    for name, value in values.items():
        lo, hi = problem.bounds[name]
        if not (np.isfinite(value) and lo <= value <= hi):
            raise InputError(f"{label} {name}={value}: must be finite and in [{lo}, {hi}]")


_INF = float("inf")
# the range of every numeric option and setting (whole numbers where the range is)
_LIMITS = {"w_reg": (0.0, _INF), "w_rgrad": (0.0, _INF), "w_dat": (1e-300, _INF),
           "width": (1, 1 << 16), "depth": (1, 64), "n_res": (2, 1 << 24),
           "pretrain_steps": (0, 1 << 40), "finetune_steps": (0, 1 << 40),
           "settle_steps": (0, 1 << 40),
           "lr_net": (1e-300, _INF), "lr_theta": (1e-300, _INF),
           "lr_net_final": (1e-300, _INF), "n_reg": (2, 1 << 24),
           "seed": (0, 2**63 - 1), "checkpoint_every": (1, 1 << 40),
           "record_every": (1, 1 << 40), "polish": (0, 1 << 20), "nx": (3, 1 << 26),
           "maxiter": (1, 1 << 30), "n_samples": (1, 1 << 30), "n_warmup": (0, 1 << 30),
           "n_chains": (1, 1024), "n_leapfrog": (1, 1 << 16), "jitter": (0.0, 0.99),
           "target_accept": (0.01, 0.99), "step_size": (1e-300, _INF),
           "processes": (1, 1024), "sigma": (1e-300, _INF), "lower_tol": (0.0, _INF),
           "lower_cap": (0, 1 << 30), "lower_lr": (1e-300, _INF), "lora_rank": (0, 1 << 16),
           "sigma_r": (1e-300, _INF), "sigma_w": (1e-300, _INF),
           "stop_theta_tol": (1e-300, _INF), "stop_lower_tol": (1e-300, _INF),
           "stop_window": (1, 1 << 40), "predictive_every": (1, 1 << 30),
           "latent": (1, 1 << 16), "batch": (1, 1 << 24), "sensors": (2, 1 << 20),
           "hold_upper": (1.0, _INF), "tv_eps": (1e-300, _INF), "causal": (1e-300, _INF)}


# settings whose command-line flag is not their name
_FLAGS = {"lr_net": "lr", "finetune_steps": "steps"}


@dataclass
class NetworkOptions(Options):
    preset: str = "quick"
    settings: Settings = field(default_factory=Settings)
    # solution at the initial guess fitted in pre-training: None, "auto", an exchange file, or
    # a function of points
    u0: object = None
    # BiLO: reference solutions at other parameters, fitted in pre-training like u0 so that the
    # network learns how u moves with θ (`bilo.train.Anchor`); empty: none
    anchors: tuple = ()
    # BiLO: ∂u/∂θ_p at the initial guess for some PDE parameters p, as functions of points,
    # fitted in pre-training to the network's own ∂u/∂θ_p; empty: none
    tangents: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    record_every: int = 10
    # after training, this many L-BFGS-B iterations of the solver and its adjoint from the
    # network's answer (problems with an adjoint); both answers are reported
    polish: int = 0
    # stop fine-tuning on convergence (bilo.train.StopRule): over the last stop_window steps θ
    # changes by less than stop_theta_tol (relative) and the lower-level loss stays below
    # stop_lower_tol; None: not checked
    stop_theta_tol: float | None = None
    stop_lower_tol: float | None = None
    stop_window: int = 500

    def to_json(self) -> dict:
        return {**super().to_json(), "anchors": [anchor.theta for anchor in self.anchors],
                "tangents": sorted(self.tangents)}

    def check(self, problem: Problem) -> None:
        super().check(problem)
        unknown = set(self.tangents) - set(problem.pde_params)
        if unknown:
            raise InputError(f"tangents: {sorted(unknown)} are not PDE parameters of problem "
                             f"'{problem.name}' ({', '.join(problem.pde_params)})")
        for anchor in self.anchors:
            unknown = set(anchor.theta) - set(problem.params)
            if unknown:
                raise InputError(f"anchors: {sorted(unknown)} are not parameters of problem "
                                 f"'{problem.name}' ({', '.join(problem.params)})")
            check_in_bounds(problem, anchor.theta, "anchors:")

    def step_options(self) -> dict:
        return {"causal": self.settings.causal}


@dataclass
class BiLOOptions(NetworkOptions):
    def step_options(self) -> dict:
        return {**super().step_options(), "w_rgrad": self.settings.w_rgrad,
                "hold_upper": self.settings.hold_upper}


@dataclass
class PINNOptions(NetworkOptions):
    w_dat: float = 1.0

    def check(self, problem: Problem) -> None:
        super().check(problem)
        if self.anchors or self.tangents:
            raise InputError("anchors, tangents: the pinn method does not take θ as an input; "
                             "only bilo fits u's dependence on θ")

    def step_options(self) -> dict:
        return {**super().step_options(), "w_dat": self.w_dat}


@dataclass
class SamplerOptions:
    """HMC over θ (`bilo.hmc`): chains, draws, warm-up (dual averaging of the step size to
    `target_accept` and a diagonal mass matrix), leapfrog steps; σ from the data file unless
    given. Chain c is seeded with seed + c."""

    n_chains: int = 4
    n_samples: int = 1000
    n_warmup: int = 1000
    n_leapfrog: int = 10
    jitter: float = 0.2
    target_accept: float = 0.75
    step_size: float | None = None
    sigma: float | None = None
    processes: int = 1  # chains in parallel processes
    predictive_every: int | None = None  # u recorded at every k-th draw (default n_samples/100)


@dataclass
class HMCSolverOptions(SamplerOptions, Options):
    seed: int = 0
    nx: int | None = None  # solver nodes (default: the data's reference grid)


@dataclass
class BayesBiLOOptions(SamplerOptions, BiLOOptions):
    """B-BiLO: BiLO's options, the sampler's, and the lower level's fine-tuning at every
    leapfrog position: until its loss is below lower_tol (by default 1.1 × the loss BiLO's
    training reached, the accuracy the network has shown it can hold) or after lower_cap
    steps, Adam at lower_lr (default the network's lr, ×10 with LoRA); lora_rank > 0:
    low-rank increments only."""

    lower_tol: float | None = None  # None: 1.1 × the lower-level loss training ended with
    lower_cap: int = 300
    lower_lr: float | None = None
    lora_rank: int = 0


@dataclass
class BPINNOptions(SamplerOptions, PINNOptions):
    """B-PINN: PINN's options (its training gives the chains' start), the sampler's, the sd
    sigma_r of the residual's Gaussian pseudo-likelihood (default: the data's noise σ) and the
    sd sigma_w of the weights' Gaussian prior."""

    sigma_r: float | None = None
    sigma_w: float = 1.0


@dataclass
class AdjointOptions(Options):
    nx: int | None = None  # solver nodes (default: the data's reference grid)
    maxiter: int = 5000
    # problems that offer several regularisers (darcy: tv, h1) and the TV's ε; None: theirs
    regulariser: str | None = None
    tv_eps: float | None = None


@dataclass
class DeepONetOptions(Options):
    """The DeepONet baseline (`bilo.deeponet`): the dataset it pre-trains on (`bilo dataset`),
    branch and trunk nets of `depth` hidden layers of `width` with `latent` basis functions,
    `pretrain_steps` Adam steps at lr_net (decaying to 5 %) over `batch` samples each, then
    `finetune_steps` (--steps) of inference at lr_theta through the frozen surrogate;
    `sensors`: points where an unknown function enters the branch net; `pretrained`: an
    earlier deeponet run (folder) on the same dataset whose operator is taken as it is."""

    dataset: str | None = None
    pretrained: str | None = None
    width: int = 128
    depth: int = 3
    latent: int = 128
    pretrain_steps: int = 10_000
    finetune_steps: int = 2_000
    lr_net: float = 3e-3
    lr_theta: float = 1e-2
    batch: int = 32
    sensors: int = 101
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    record_every: int = 10

    def check(self, problem: Problem) -> None:
        super().check(problem)
        if not self.dataset:
            raise InputError("--dataset: the deeponet method needs a dataset made by "
                             f"`bilo dataset {problem.name} ... --out DS.h5`")


def require_network(problem: Problem) -> None:
    """The network methods need the problem's residual."""
    if not problem.has_network:
        raise InputError(f"problem '{problem.name}' declares no residual: no network method "
                         "for it yet")


class Strategy:
    name = ""
    Options: type[Options] = Options

    def fit(self, problem: Problem, data: SolutionFile, options, out: Path, *,
            data_path: str | None = None, resume: bool = False, log=print) -> Result:
        raise NotImplementedError


class NetworkStrategy(Strategy):
    # the optimisation steps, a class of `bilo.methods` (imported with torch when training)
    steps = ""

    def make_run(self, problem, data, data_path, options, out):
        """The training run (`bilo.train.Run`) that `fit` drives, for step-level access."""
        import bilo.methods
        from bilo.train import Run

        require_network(problem)
        problem.check_data(data, data_path or "the data")
        return Run(problem, data, self.name, getattr(bilo.methods, self.steps), options, out,
                   data_path)

    def fit(self, problem, data, options, out, *, data_path=None, resume=False, log=print):
        run = self.make_run(problem, data, data_path, options, out)
        if resume:
            run.load_checkpoint()
            print(f"resuming from step {run.step} ({run.checkpoint_path})")
        run.train()
        return run.result()


class BiLOStrategy(NetworkStrategy):
    name, Options, steps = "bilo", BiLOOptions, "BiLO"


class PINNStrategy(NetworkStrategy):
    name, Options, steps = "pinn", PINNOptions, "PINN"


class DeepONetStrategy(Strategy):
    """Pre-train a DeepONet on solver data, infer through it (`bilo.deeponet`)."""

    name, Options = "deeponet", DeepONetOptions

    def fit(self, problem, data, options, out, *, data_path=None, resume=False, log=print):
        from bilo.deeponet import DeepONetRun

        run = DeepONetRun(problem, data, options, out, data_path, method=self.name, log=log)
        if resume:
            run.load_checkpoint()
            print(f"resuming from step {run.step} ({run.checkpoint_path})")
        run.train()
        return run.result()


class AdjointStrategy(Strategy):
    name, Options = "adjoint", AdjointOptions

    def fit(self, problem, data, options, out, *, data_path=None, resume=False, log=print):
        from adjoint.optimize import minimize

        w_reg = {name: spec.w_reg if options.w_reg is None else options.w_reg
                 for name, spec in problem.functions.items()}
        choices = problem.regularisers
        if options.regulariser is not None and options.regulariser not in choices:
            raise InputError(f"--regulariser {options.regulariser}: problem '{problem.name}' "
                             f"offers {', '.join(choices) or 'no choice'}")
        if options.tv_eps is not None and "tv" not in choices:
            raise InputError(f"--tv-eps: problem '{problem.name}' has no TV regulariser")
        problem.check_data(data, data_path or "the data")
        extra = {k: v for k, v in (("regulariser", options.regulariser),
                                   ("tv_eps", options.tv_eps)) if v is not None}
        model = problem.adjoint(data, w_reg=w_reg, nx=options.nx, **extra)
        if model is None:
            raise InputError(f"no adjoint for problem '{problem.name}'; problems with one: "
                             f"{', '.join(problems_with_adjoint())}")
        functions = list(problem.functions)
        on_mesh = data.mesh is not None  # a function per mesh vertex, else of x
        if functions:
            (name,) = functions
            m0 = model.initial_guess()
            truth = (None if name not in data.inputs else data.inputs[name] if on_mesh
                     else np.interp(FUNCTION_POINTS, data.grid["x"], data.inputs[name]))

            def on_points(m):
                return (model.full_function(m) if on_mesh
                        else np.interp(FUNCTION_POINTS, model.x, model.full_function(m)))

            def record(m):
                return {} if truth is None else {f"{name}_rel_err":
                                                 relative_l2(on_points(m), truth)}
        else:
            m0 = np.array([options.theta0[k] for k in problem.params], dtype=np.float64)
            record = None
        tolerance = {"gtol": model.gtol} if hasattr(model, "gtol") else {}  # scaled to its J
        found = minimize(model, m0, maxiter=options.maxiter, log=log, record=record, **tolerance)
        rows = found.trajectory
        history = {"step": np.array([r["iteration"] for r in rows], dtype=np.float64),
                   "wall": np.array([r["wall_s"] for r in rows]),
                   "theta": np.array([[r[k] for k in problem.params] for r in rows],
                                     dtype=np.float64).reshape(len(rows), -1),
                   "J": np.array([r["J"] for r in rows])}
        u = (model.solution(found.m) if on_mesh else model.predict(
            found.m, reference_points(problem, data))).reshape(data.u.shape)
        obs = data.observations
        # the adjoint's own discretisation against the data (validation re-solves with the
        # reference solver, whose time steps may differ: Burgers); none for events
        misfit_vs_data = (None if obs is None else relative_l2(
            model.predict(found.m, obs.points_in(problem.coords)), obs.values))
        return Result(
            method=self.name, problem=problem, data=data, data_path=data_path,
            params={k: float(v) for k, v in zip(problem.params, found.m, strict=False)}
            if not functions else {},
            functions={name: model.full_function(found.m)} if functions else {},
            function_x=model.x if functions else FUNCTION_POINTS, u=u, history=history,
            steps={"iterations": found.iterations}, wall_s={"adjoint": found.wall_s},
            device="cpu", w_reg=w_reg, constants={k: v for k, v in data.params.items()
                                                   if k not in problem.params},
            options=options.to_json(),
            predict=lambda points: model.predict(found.m, points),
            extra={"model_rel_l2_vs_data": misfit_vs_data,
                   "objective": found.objective, "gradient_norm": found.gradient_norm,
                   "converged": found.converged, "message": found.message,
                   **({"regulariser": model.regulariser, "tv_eps": model.tv_eps}
                      if on_mesh else {}),
                   "n_forward_solves": found.n_forward_solves,
                   "n_adjoint_solves": found.n_adjoint_solves,
                   "optimizer": "scipy L-BFGS-B", "trajectory": rows})


class HMCSolverStrategy(Strategy):
    """The reference posterior: HMC with the problem's solver and its adjoint's gradient."""

    name, Options = "hmc-solver", HMCSolverOptions

    def fit(self, problem, data, options, out, *, data_path=None, resume=False, log=print):
        from bilo.posterior import fit_hmc_solver

        if resume:
            raise InputError("hmc-solver does not resume; run it again with --overwrite")
        return fit_hmc_solver(problem, data, options, out, data_path=data_path, log=log,
                              method=self.name)


class NetworkSamplerStrategy(Strategy):
    """A sampler over a trained network (no resume: a run is one piece)."""

    def fit(self, problem, data, options, out, *, data_path=None, resume=False, log=print):
        if resume:
            raise InputError(f"{self.name} does not resume; run it again with --overwrite")
        require_network(problem)
        return self.sample(problem, data, options, out, data_path=data_path, log=log)


class BayesBiLOStrategy(NetworkSamplerStrategy):
    """B-BiLO (`bilo.bayes`): HMC over θ, the network fine-tuned at every leapfrog position."""

    name, Options = "hmc", BayesBiLOOptions

    def sample(self, problem, data, options, out, *, data_path, log):
        from bilo.bayes import fit_bayes_bilo

        return fit_bayes_bilo(problem, data, options, out, data_path=data_path, log=log,
                              method=self.name)


class BPINNStrategy(NetworkSamplerStrategy):
    """B-PINN (`bilo.bpinn`): HMC over θ and the PINN's weights jointly, the baseline."""

    name, Options = "bpinn", BPINNOptions

    def sample(self, problem, data, options, out, *, data_path, log):
        from bilo.bpinn import fit_bpinn

        return fit_bpinn(problem, data, options, out, data_path=data_path, log=log,
                         method=self.name)


METHODS: dict[str, Strategy] = {s.name: s for s in (
    BiLOStrategy(), PINNStrategy(), AdjointStrategy(), BayesBiLOStrategy(),
    HMCSolverStrategy(), BPINNStrategy(), DeepONetStrategy())}


def problems_with_adjoint() -> list[str]:
    from bilo.problems import PROBLEMS

    return [name for name, cls in PROBLEMS.items() if cls.adjoint is not Problem.adjoint]


def make_options(problem: Problem, method: str, preset: str = "quick",
                 overrides: dict | None = None, **values) -> Options:
    """A method's options: a network method's settings from the problem's preset, with
    `overrides` (width, steps, ...) where given; `values` set the options' fields."""
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    cls = METHODS[method].Options
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if v is not None}
    if not issubclass(cls, NetworkOptions):  # settings that are the method's own fields
        values.update({k: v for k, v in (overrides or {}).items()
                       if v is not None and k in names})
    unknown = set(values) - names
    if unknown:
        raise InputError(f"method '{method}' has no option {', '.join(sorted(unknown))}; "
                         f"its options: {', '.join(sorted(names))}")
    theta0 = {**problem.initial_guess, **values.pop("theta0", {})}
    extra = set(theta0) - set(problem.params)
    if extra:
        raise InputError(f"problem '{problem.name}' has no parameter {', '.join(extra)}; "
                         f"its parameters: {', '.join(problem.params) or '(none)'}")
    if issubclass(cls, NetworkOptions):
        require_network(problem)
        if preset not in problem.presets:
            raise InputError(f"problem '{problem.name}' has presets "
                             f"{', '.join(problem.presets) or '(none)'}, not '{preset}'")
        values["settings"] = replace(problem.presets[preset], **{
            k: v for k, v in (overrides or {}).items() if v is not None})
        values["preset"] = preset
    options = cls(theta0=theta0, **values)
    options.check(problem)
    return options


def load_data(problem: Problem, data: str | Path | SolutionFile) -> tuple[SolutionFile, str | None]:
    """The data file (read and checked against the problem) and its resolved path."""
    path = None
    if not isinstance(data, SolutionFile):
        path = str(Path(data).resolve())
        data = read_solution(data)
    where = path or "the data"
    obs = data.observations
    if obs is not None and data.mesh is None:  # grid data: the problem's unit box
        for j, column in enumerate(obs.columns):
            outside = (obs.points[:, j] < 0.0) | (obs.points[:, j] > 1.0)
            if outside.any():
                raise InputError(f"{where}: field 'observations/points': {int(outside.sum())} "
                                 f"point(s) with {column} outside the domain [0, 1], e.g. "
                                 f"{obs.points[outside][0].tolist()}")
    if obs is not None and np.abs(obs.values).max(initial=0.0) > np.finfo(np.float32).max:
        raise InputError(f"{where}: field 'observations/values': values up to "
                         f"{np.abs(obs.values).max():.3g} overflow float32, the networks' dtype")
    if data.problem != problem.name:
        raise InputError(f"{where}: field '/@problem': holds problem '{data.problem}', not "
                         f"'{problem.name}'")
    needed = problem.likelihood.data  # observations, or events (a point-process likelihood)
    if getattr(data, needed) is None:
        how = " --snapshots M" if needed == "events" else ""
        raise InputError(f"{where}: field '{needed}': missing; problem '{problem.name}' needs "
                         f"{needed}: make the file with `bilo solve {problem.name}{how} ... "
                         "--out FILE.h5`")
    return data, path


def fit(problem: Problem, data: str | Path | SolutionFile, method: str, out: str | Path,
        options: Options | None = None, *, resume: bool = False, overwrite: bool = False,
        validate: bool = True, log=print) -> Result:
    """Run `method` on the data; write result.h5, summary.json and figures in `out`; then (by
    default) validate the answer against the problem's reference solver (`bilo.validate`).
    `log` takes the method's progress lines (None: silent); the rest goes to stdout. A folder
    holding a run is refused unless `resume` or `overwrite` (`bilo.runs`)."""
    options = options or make_options(problem, method)
    data, data_path = load_data(problem, data)
    with run_folder(out, resume=resume, overwrite=overwrite) as out:
        return _fit_in(problem, data, data_path, method, out, options, resume, validate, log)


def _fit_in(problem, data, data_path, method, out, options, resume, validate, log) -> Result:
    config = {"method": method, "problem": problem.name, "data": data_path,
              **options.to_json()}
    if resume:
        check_resume(out, config)
    write_json_atomic(out / "config.json", config)
    print(f"{method} on {problem.name} ({data_path or 'data in memory'}), options "
        f"{json.dumps(options.to_json(), default=str)[:200]}")
    result = METHODS[method].fit(problem, data, options, out, data_path=data_path,
                                 resume=resume, log=log)
    write_result(out, result)
    if validate and problem.reference is not None:
        from bilo.validate import validate as validate_run

        result.summary = validate_run(out, problem=problem)
    if getattr(options, "polish", 0):
        result.summary["polish"] = polish(problem, data, result, options.polish, log=log)
        write_json_atomic(out / "summary.json", result.summary)
    return result


def polish(problem: Problem, data: SolutionFile, result: Result, iterations: int,
           log=print) -> dict:
    """Finish a network's answer with `iterations` L-BFGS-B steps of the problem's solver and
    adjoint (the same J), starting from it; the polished answer beside the network's."""
    from adjoint.optimize import minimize

    w_reg = result.w_reg
    model = problem.adjoint(data, w_reg=w_reg)
    if model is None:
        raise InputError(f"--polish: problem '{problem.name}' has no adjoint")
    on_mesh = data.mesh is not None  # a function per vertex, all of them unknowns
    if problem.functions:
        (name,) = problem.functions
        m0 = (result.functions[name] if on_mesh
              else np.interp(model.x[1:-1], result.function_x, result.functions[name]))
    else:
        m0 = np.array([result.params[k] for k in problem.params])
    before = model.objective(m0)
    tolerance = {"gtol": model.gtol} if hasattr(model, "gtol") else {}  # scaled to its J
    found = minimize(model, m0, maxiter=iterations, log=log, **tolerance)
    polished = {"objective_before": before, "objective": found.objective,
                "iterations": found.iterations, "converged": found.converged,
                "wall_s": round(found.wall_s, 4)}
    truth = {k: float(data.params[k]) for k in problem.params if k in data.params}
    if problem.functions and name in data.inputs:
        values, truth_values = ((model.full_function(found.m), data.inputs[name]) if on_mesh
                                else (np.interp(FUNCTION_POINTS, model.x,
                                                model.full_function(found.m)),
                                      np.interp(FUNCTION_POINTS, data.grid["x"],
                                                data.inputs[name])))
        polished["rel_err"] = {name: relative_l2(values, truth_values)}
    elif not problem.functions:
        polished["params"] = dict(zip(problem.params, found.m.tolist(), strict=True))
        polished["rel_err"] = relative_errors(polished["params"], truth)
    print(f"polished with {found.iterations} solver iterations: J {before:.6e} -> "
          f"{found.objective:.6e}" + "".join(f", {k}={v:.6g}"
                                              for k, v in polished.get("params", {}).items()))
    return polished
