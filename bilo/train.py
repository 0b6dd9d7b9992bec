"""The training loop of the network methods: data in, pre-training, fine-tuning, settling,
checkpoints.

A `Run` trains one method's surrogate on one data file in a directory (`checkpoint.pt` while
training) and hands back a `bilo.results.Result`; `bilo.strategies` wraps it as the `bilo` and
`pinn` strategies. A run resumes exactly from its checkpoint (weights, θ, both Adam states,
the step, the torch RNG). `Run.step_once` is one step of the loop, what `bilo train` does per
step (bench/step_cost.py times it). Fine-tuning stops at its step count or, with a `StopRule`
in the options, on convergence (`Result.extra["stop_reason"]`); BiLO may then settle
(`Settings.settle_steps`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bilo.methods import Batch, Method
from bilo.model import Problem
from bilo.results import TRACKS, Result, function_points, reference_points
from solvers.common import Diverged, InputError, Interrupted, atomic_path
from solvers.exchange import SolutionFile, read_solution


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


@dataclass
class Phase:
    """The loop state of one phase of `Run.train`."""

    name: str
    start: int  # the run's step at which the phase begins
    end: int  # the step after its last
    step_fn: Callable[[Batch], dict[str, torch.Tensor]]
    bar: tqdm
    clock: float  # time.perf_counter() when the loop (re)started the phase
    wall0: float  # the phase's wall seconds before that


@dataclass(frozen=True)
class StopRule:
    """Stop fine-tuning on convergence (off unless a tolerance is given). Checked at every
    recorded step once the phase has run `window` steps: over the records of the last `window`
    steps,

    * `theta_tol`: for every parameter, (max − min of θ) / max(|θ now|, |θ initial|) is below it;
    * `lower_tol`: the recorded lower-level loss, "res" + "rgrad" (PINN: "res"), is below it
      at every record.

    Each given tolerance must hold. The options' fields: `stop_theta_tol`, `stop_lower_tol`
    (default None: not checked) and `stop_window` (default 500 steps)."""

    theta_tol: float | None = None
    lower_tol: float | None = None
    window: int = 500

    @classmethod
    def from_options(cls, options, problem: Problem) -> StopRule | None:
        theta_tol = getattr(options, "stop_theta_tol", None)
        lower_tol = getattr(options, "stop_lower_tol", None)
        window = getattr(options, "stop_window", None)
        window = cls.window if window is None else window
        if theta_tol is None and lower_tol is None:
            return None
        for flag, value in (("stop-theta-tol", theta_tol), ("stop-lower-tol", lower_tol)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"--{flag} {value}: must be a finite number above 0")
        if isinstance(window, bool) or not (isinstance(window, int) and window >= 1):
            raise InputError(f"--stop-window {window}: must be a whole number of steps >= 1")
        if problem.functions:
            raise InputError(f"--stop-theta-tol/--stop-lower-tol: problem '{problem.name}' has "
                             "unknown functions, which the convergence rule does not watch")
        return cls(theta_tol, lower_tol, window)

    def check(self, history: dict[str, list], start: int, theta0: np.ndarray) -> str | None:
        """"converged: ..." when the records since step `start` (the phase's first) satisfy
        the rule over the last window, else None."""
        steps = history["step"]
        now = steps[-1]
        if now - start < self.window:
            return None
        first = bisect_left(steps, now - self.window)
        parts = []
        if self.theta_tol is not None:
            theta = np.asarray(history["theta"][first:], dtype=np.float64)
            if theta.size:
                scale = np.maximum(np.abs(theta[-1]), np.abs(theta0))
                scale[scale == 0] = 1.0
                change = float(((theta.max(axis=0) - theta.min(axis=0)) / scale).max())
            else:
                change = 0.0
            if not change < self.theta_tol:
                return None
            parts.append(f"relative change of θ {change:.2e} < {self.theta_tol:g}")
        if self.lower_tol is not None:
            lower = np.zeros(len(steps) - first)
            for key in ("res", "rgrad"):
                if key in history:
                    lower += np.asarray(history[key][first:], dtype=np.float64)
            largest = float(lower.max())
            if not largest < self.lower_tol:  # NaN (a missing record) does not converge
                return None
            parts.append(f"lower-level loss at most {largest:.2e} < {self.lower_tol:g}")
        return f"converged: over the last {self.window} steps {', '.join(parts)}"


@contextlib.contextmanager
def _signals_caught():
    """SIGINT and SIGTERM noted in the yielded list instead of ending the process (the loop
    checkpoints and stops); the previous handlers come back afterwards. Outside the main
    thread signals cannot be caught and nothing changes."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _format_losses(losses: dict[str, float], theta: list[float], names) -> str:
    parts = [f"{k} {v:.2e}" for k, v in losses.items()]
    parts += [f"{n} {v:.4f}" for n, v in zip(names, theta, strict=True)]
    return " ".join(parts)


def read_checkpoint(path: Path, where: str | None = None) -> dict:
    """A checkpoint's saved state; a torn or foreign file is one InputError line naming
    `where` (default: the path)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(f"{where or path}: unreadable checkpoint ({type(exc).__name__})"
                         ) from None


def observed_data(problem: Problem, data: SolutionFile, data_path: str | None = None):
    """(points where the likelihood needs u, what it compares u with): the observation points
    and values, or, for events, the likelihood's points (quadrature nodes and the events) and
    the events themselves."""
    where = data_path or "the data"
    if problem.likelihood.data == "events":
        events = data.events
        return problem.likelihood.points(events.positions_in(problem.coords, where)), events
    obs = data.observations
    return obs.points_in(problem.coords, where), obs.values


@dataclass(frozen=True)
class Anchor:
    """A reference solution at parameters `theta` (those not given: the initial guess's), as a
    function of points (n, len(coords)) -> (n,). BiLO fits the network at θ_a to it in
    pre-training, at the residual points, as it fits u0 at θ0: the network is then told how u
    moves with θ rather than left to learn it from ∂θ r alone (`NetworkOptions.anchors`)."""

    theta: dict
    solution: Callable


class Run:
    """One training run of a network method in a directory."""

    def __init__(self, problem: Problem, data: SolutionFile, method: str,
                 method_class: type[Method], options, out: str | Path,
                 data_path: str | None = None):
        """`options` is the method's options (`bilo.strategies.NetworkOptions`); its `u0` is
        None, "auto" (solve the reference at the initial guess), an exchange file, or a function
        of points giving the solution at the initial guess (an application's own solver)."""
        self.problem, self.data, self.options = problem, data, options
        self.method_name, self.out = method, Path(out)
        self.data_path = data_path
        self.device = pick_device(options.device)
        torch.manual_seed(options.seed)
        s = options.settings
        theta0 = torch.tensor([options.theta0[p] for p in problem.params], dtype=torch.float32)
        constants = {k: v for k, v in data.params.items() if k not in problem.params}
        self.method: Method = method_class(
            problem, s.width, s.depth, theta0, s.lr_net, s.lr_theta, constants=constants,
            w_reg=options.w_reg, **options.step_options()).to(self.device)
        # initial guesses of x sampled once and interpolated at the redrawn points (a GRF
        # draw on a fine grid costs about a second); those of several coordinates are
        # evaluated at the points themselves (darcy's A0 series: milliseconds)
        fine = np.linspace(0.0, 1.0, 4001)
        self._f0_samples = {name: (fine, spec.initial(fine))
                            for name, spec in problem.functions.items()
                            if len(spec.coords) == 1}
        self._u0 = self._u0_function(options.u0)
        self._anchor_theta = [torch.tensor([{**options.theta0, **a.theta}[p]
                                            for p in problem.params], dtype=torch.float32,
                                           device=self.device) for a in options.anchors]
        self.batch = self._make_batch()
        self.step = 0  # steps done, pre-training, fine-tuning, then settling
        self.history: dict[str, list] = {key: [] for key in TRACKS}
        self.wall = {name: 0.0 for name, *_ in self.phases()}
        self.stop_rule = StopRule.from_options(options, problem)
        self._theta0 = theta0.numpy().astype(np.float64)
        # "converged: ..." once the stop rule has stopped fine-tuning; "step limit" at its end
        self.stop_reason: str | None = None
        self._checkpoint_step: int | None = None  # the step the checkpoint on disk holds

    # -- data ---------------------------------------------------------------------------------
    def _make_batch(self) -> Batch:
        points, observed = observed_data(self.problem, self.data, self.data_path)
        reg_x, f0 = self.regulariser_points(step=0)
        return Batch(**self._collocation(step=0), obs_points=self._tensor(points),
                     obs_values=observed if self.problem.likelihood.data == "events"
                     else self._tensor(observed), reg_x=reg_x, f0=f0)

    def _tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

    def regulariser_points(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Points for the functions' regulariser and f0 fit, and f0 there: n_reg evenly spaced
        in x (an n_reg × n_reg grid over the unit square for functions of two coordinates), or
        (`stratified_reg`, after step 0) one uniform draw in each of the grid's equal cells, so
        that f cannot grow wiggles unseen between fixed points. Points in x alone are (n_reg,),
        rows of coordinates otherwise."""
        n, dim = self.options.settings.n_reg, len(self.problem.function_coords)
        cells = np.stack(np.meshgrid(*[np.arange(n)] * dim, indexing="ij"), -1).reshape(-1, dim)
        points = np.linspace(0.0, 1.0, n)[cells]
        if self.options.settings.stratified_reg and step > 0:
            points = (cells + np.random.default_rng(step).random(cells.shape)) / n
        if dim == 1:
            points = points[:, 0]
        f0 = {name: np.interp(points, *self._f0_samples[name]) if name in self._f0_samples
              else spec.initial(points) for name, spec in self.problem.functions.items()}
        return self._tensor(points), {name: self._tensor(v) for name, v in f0.items()}

    def _collocation(self, step: int) -> dict:
        """The batch's fields at the residual points (drawn anew each step for problems that
        resample): the points and, in pre-training (the only phase that fits them), u0 there,
        each anchor's (θ_a, solution there) and each tangent there."""
        settings = self.options.settings
        points = self.problem.collocation(settings.n_res, seed=step)
        at = points.numpy()  # one array for every solution (the GBM's share a point locator)
        fitted = step < settings.pretrain_steps
        u0 = self._tensor(self._u0(at)) if fitted and self._u0 is not None else None
        anchors = [(theta, self._tensor(anchor.solution(at)))
                   for theta, anchor in zip(self._anchor_theta, self.options.anchors,
                                            strict=True)] if fitted else []
        tangents = {name: self._tensor(tangent(at))
                    for name, tangent in self.options.tangents.items()} if fitted else {}
        return {"collocation": self._tensor(points), "u0": u0, "anchors": anchors,
                "tangents": tangents}

    def _u0_function(self, u0) -> Callable | None:
        """The solution at the initial guess as a function of points, from `options.u0`."""
        from solvers.exchange import write_solution
        from solvers.reference import sample

        if u0 is None or callable(u0):
            return u0
        theta0 = self.options.theta0
        path = str(self.out / "u0.h5") if u0 == "auto" else u0
        if u0 == "auto" and not Path(path).exists():
            self.out.mkdir(parents=True, exist_ok=True)
            write_solution(path, self._solve_at_initial_guess())
        solution = read_solution(path)
        mismatch = {k: v for k, v in theta0.items()
                    if not np.isclose(solution.params.get(k, np.nan), v)}
        if mismatch:
            raise InputError(f"{path}: field 'params': solved at {solution.params}, but the "
                             f"initial guess is {theta0}")
        if solution.mesh is not None:
            from meshes.interpolation import P1Interpolator

            if self.data.mesh is None or solution.mesh.vertices.shape != \
                    self.data.mesh.vertices.shape:
                raise InputError(f"{path}: field 'mesh': not the data file's mesh")
            interpolate = P1Interpolator(solution.mesh.vertices, solution.mesh.cells)

            def on_mesh(points: np.ndarray) -> np.ndarray:
                values = interpolate(solution.u, points, outside=np.nan)
                if np.isnan(values).any():
                    raise InputError(f"{path}: field 'mesh': does not cover the residual points "
                                     "(the networks' domain is the unit box)")
                return values

            return on_mesh
        return lambda points: sample(solution, points, self.problem.coords)

    def _solve_at_initial_guess(self) -> SolutionFile:
        """The reference at the initial guess θ0, f0: on the data's mesh for a problem solved
        there (dolfinx, in this process), else at the declaration's resolution."""
        from bilo.synthetic import run_reference

        problem, fixed = self.problem, {k: v for k, v in self.data.params.items()
                                        if k not in self.problem.params}
        if problem.reference.on_mesh:
            vertices = self.data.mesh.vertices[:, :2]
            solution = problem.reference_solution(self.data, {
                name: spec.initial(vertices) for name, spec in problem.functions.items()})
            return solution.to_solution_file(problem.name, {**fixed, **self.options.theta0},
                                             {"solved_at": "the initial guess (u0)"})
        initial = {name: spec.initial for name, spec in problem.functions.items()}
        return run_reference(problem, {**fixed, **self.options.theta0}, initial)

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def identity(self) -> dict:
        return {"method": self.method_name, "problem": self.problem.name,
                "data": self.data_path}

    def save_checkpoint(self) -> None:
        self._checkpoint_step = self.step
        state = {"identity": self.identity(), "step": self.step, "history": self.history,
                 "wall": self.wall, "method": self.method.state_dict(),
                 "torch_rng": torch.get_rng_state(), "stop_reason": self.stop_reason,
                 "tuned_until": self._tuned_until()}
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.exists():
            raise InputError(f"{path}: no checkpoint to resume from")
        state = read_checkpoint(path)
        saved = state.get("identity", {})
        if saved != self.identity():
            raise InputError(f"{path}: checkpoint is for {saved.get('method')} on "
                             f"{saved.get('problem')} with {saved.get('data')}, not this run")
        tuned, step = state.get("tuned_until"), state["step"]
        settles = any(name == "settle" for name, *_ in self.phases())
        if tuned is not None and step > tuned and (tuned != self._tuned_until()
                                                   or not settles):
            raise InputError(f"{path}: the run has settled {step - tuned} steps after "
                             f"fine-tuning ended at step {tuned}; a resume must keep "
                             f"--pretrain-steps + --steps at {tuned} and --settle-steps > 0")
        self.method.load_state_dict(state["method"])
        self.method.to(self.device)
        self.step, self.history = state["step"], state["history"]
        self.wall.update(state["wall"])
        self.stop_reason = state.get("stop_reason")
        self._checkpoint_step = self.step
        torch.set_rng_state(state["torch_rng"])

    # -- loop ---------------------------------------------------------------------------------
    def _record(self, losses: dict[str, torch.Tensor]) -> tuple[dict[str, float], list[float]]:
        """Append the step, θ, the wall clock and the losses to the history; the losses and θ
        come off the device in one transfer (one synchronisation on a GPU)."""
        theta = self.method.theta.detach()
        row = torch.cat([torch.stack([v.detach() for v in losses.values()]), theta]).tolist()
        values = dict(zip(losses, row, strict=False))
        theta_values = row[len(losses):]
        n_before = len(self.history["step"])
        self.history["step"].append(self.step)
        self.history["theta"].append(theta_values)
        self.history["wall"].append(sum(self.wall.values()))
        for key in values.keys() | (self.history.keys() - set(TRACKS)):
            # a loss used in one phase only (u0, dat) is NaN in the other
            column = self.history.setdefault(key, [float("nan")] * n_before)
            column.append(values.get(key, float("nan")))
        return values, theta_values

    def _tuned_until(self) -> int:
        """The step at which fine-tuning ends and settling begins."""
        s = self.options.settings
        return s.pretrain_steps + s.finetune_steps

    def phases(self) -> list[tuple[str, int, int, Callable]]:
        """(name, first step, end step, step function) of pre-training, fine-tuning and, with
        `settle_steps` for a method that settles, settling."""
        s = self.options.settings
        tuned = self._tuned_until()
        phases = [("pretrain", 0, s.pretrain_steps, self.method.pretrain_step),
                  ("finetune", s.pretrain_steps, tuned, self.method.finetune_step)]
        if s.settle_steps and self.method.settles:
            phases.append(("settle", tuned, tuned + s.settle_steps, self.method.settle_step))
        return phases

    def start_phase(self, name: str, file=None) -> Phase:
        """The loop state of phase `name` from the current step on, with its progress bar on
        `file` (default: stderr)."""
        (start, end, step_fn), = [p[1:] for p in self.phases() if p[0] == name]
        n_steps = end - start
        # a bar on a terminal; in logs (no terminal) a line about every 10 %
        interactive = (file or sys.stderr).isatty()
        bar = tqdm(total=n_steps, initial=max(self.step - start, 0), desc=name, unit="step",
                   file=file, mininterval=0.5, maxinterval=3600,
                   miniters=None if interactive else max(n_steps // 10, 1))
        return Phase(name, start, end, step_fn, bar, time.perf_counter(), self.wall[name])

    def step_once(self, phase: Phase) -> dict[str, torch.Tensor]:
        """One step of `train`'s loop in `phase`: new points where the problem redraws them,
        the method's step, a record every `record_every` steps and at the phase's last step,
        the progress bar, the wall clock, a checkpoint every `checkpoint_every` steps."""
        s, options = self.options.settings, self.options
        if self.problem.resample_collocation and self.step > 0:
            for name, value in self._collocation(self.step).items():
                setattr(self.batch, name, value)
        if self.problem.functions and s.stratified_reg and self.step > 0:
            self.batch.reg_x, self.batch.f0 = self.regulariser_points(self.step)
        if s.fresh_upper and phase.name == "finetune" and self.step == phase.start:
            self.method.reset_upper()
        if s.lr_net_final is not None and phase.name != "pretrain":
            # settling goes on at the rate fine-tuning ended with
            done = 1.0 if phase.name == "settle" else (
                (self.step - phase.start) / max(phase.end - phase.start - 1, 1))
            for group in self.method.opt_net.param_groups:
                group["lr"] = s.lr_net * (s.lr_net_final / s.lr_net) ** done
        losses = phase.step_fn(self.batch)
        self._check_finite(losses)
        if (self.step - phase.start) % options.record_every == 0 or self.step == phase.end - 1:
            values, theta = self._record(losses)
            phase.bar.set_postfix_str(_format_losses(values, theta, self.problem.params),
                                      refresh=False)
            if self.stop_rule is not None and phase.name == "finetune":
                self.stop_reason = self.stop_rule.check(self.history, phase.start,
                                                        self._theta0)
        self.step += 1
        phase.bar.update(1)
        self.wall[phase.name] = phase.wall0 + time.perf_counter() - phase.clock
        if self.step % options.checkpoint_every == 0:
            self.save_checkpoint()
        return losses

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Stop at the first step whose losses or θ are not finite, before anything of it is
        recorded or checkpointed (one check of all of them at once)."""
        theta = self.method.theta.detach()
        values = torch.cat([torch.stack([v.detach() for v in losses.values()]), theta])
        if bool(torch.isfinite(values).all()):
            return
        names = [*losses, *(f"θ {p}" for p in self.problem.params)]
        bad = [f"{n} = {v}" for n, v in zip(names, values.tolist(), strict=True)
               if not np.isfinite(v)]
        kept = (f"{self.checkpoint_path} keeps the last finite state (step "
                f"{self._checkpoint_step})" if self._checkpoint_step is not None
                else "no checkpoint was written before it")
        raise Diverged(f"step {self.step}: {', '.join(bad)}: training diverged; {kept}; a "
                       "smaller learning rate or other weights may help")

    @property
    def converged(self) -> bool:
        return self.stop_reason is not None and self.stop_reason.startswith("converged")

    def train(self) -> None:
        """Pre-training, then fine-tuning up to its step count or until the stop rule holds,
        then (`settle_steps`, BiLO) settling, unless the stop rule ended fine-tuning (its
        lower-level tolerance holds then). A run resumed after it converged takes no more
        steps unless the rule it is resumed with (possibly none) no longer holds on its
        history. SIGINT and SIGTERM (a scheduler's pre-emption) stop it after the current step
        with a checkpoint (`Interrupted`)."""
        with _signals_caught() as caught:
            self._train(caught)

    def _train(self, caught: list[int]) -> None:
        if self.converged:
            self.stop_reason = None if self.stop_rule is None else self.stop_rule.check(
                self.history, self.options.settings.pretrain_steps, self._theta0)
        for name, _, end, _ in self.phases():
            if self.step >= end or self.converged:
                continue
            phase = self.start_phase(name)
            try:  # the bar closes before any message of a stop
                while self.step < end and not self.converged and not caught:
                    self.step_once(phase)
            finally:
                phase.bar.close()
            if caught:
                self.save_checkpoint()
                raise Interrupted(caught[0], f"stopped by {signal.Signals(caught[0]).name} at "
                                  f"step {self.step}; {self.checkpoint_path} holds it: continue "
                                  "with --resume")
        if not self.converged:
            self.stop_reason = "step limit"
        self.save_checkpoint()

    # -- results ------------------------------------------------------------------------------
    def _steps_by_phase(self) -> dict[str, int]:
        """Steps taken in each phase; the last one counts every step beyond its start (a run
        resumed with fewer steps than it had taken)."""
        phases = self.phases()
        return {name: max(self.step - start, 0) if i == len(phases) - 1
                else min(max(self.step - start, 0), end - start)
                for i, (name, start, end, _) in enumerate(phases)}

    def result(self) -> Result:
        surrogate = self.method.surrogate
        u = surrogate.predict_numpy(reference_points(self.problem, self.data))
        history = {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}
        history["theta"] = history["theta"].reshape(len(history["step"]), -1)
        points = function_points(self.problem, self.data)
        return Result(
            method=self.method_name, problem=self.problem, data=self.data,
            data_path=self.data_path, params=surrogate.params(),
            functions=surrogate.functions_on(points), function_x=points,
            u=u.reshape(self.data.u.shape),
            history=history, steps=self._steps_by_phase(),
            wall_s=dict(self.wall), device=str(self.device), w_reg=self.method.w_reg,
            constants=surrogate.constants, options=self.options.to_json(),
            predict=surrogate.predict_numpy,
            extra={"stop_reason": self.stop_reason or "step limit"})
