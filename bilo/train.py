"""Training runs: data in (exchange HDF5), pre-training, fine-tuning, checkpoints, results out.

A run directory holds `config.json`, `checkpoint.pt` (while training), `result.h5`,
`summary.json` and figures. `train(...)` with `resume=True` continues from the checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bilo.methods import METHODS, Batch, Method
from bilo.problems import get_problem
from bilo.problems.base import Problem, Settings
from bilo.results import TRACKS, write_results
from solvers.exchange import InputError, SolutionFile, atomic_path, read_solution


@dataclass
class RunConfig:
    problem: str
    data: str
    method: str = "bilo"
    preset: str = "quick"
    settings: Settings = field(default_factory=Settings)
    theta0: dict[str, float] = field(default_factory=dict)
    u0: str | None = None  # exchange file with the numerical solution at θ0, or "auto"
    w_rgrad: float = 0.1
    w_dat: float = 1.0
    w_reg: float | None = None  # unknown functions: the problem's default unless given
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    record_every: int = 10

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, blob: dict) -> RunConfig:
        blob = dict(blob)
        settings = dict(blob.pop("settings"))
        settings["n_res"] = tuple(settings["n_res"])
        return cls(settings=Settings(**settings), **blob)


def make_config(problem_name: str | Problem, data: str, method: str = "bilo",
                preset: str = "quick", overrides: dict | None = None, **options) -> RunConfig:
    """A run configuration from a preset, with settings overridden where given. The problem is
    a registry name or a problem object built by an application."""
    problem = get_problem(problem_name) if isinstance(problem_name, str) else problem_name
    problem_name = problem.name
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    if preset not in problem.presets:
        raise InputError(f"problem '{problem_name}' has presets {', '.join(problem.presets)}, "
                         f"not '{preset}'")
    settings = replace(problem.presets[preset], **{k: v for k, v in (overrides or {}).items()
                                                   if v is not None})
    theta0 = {**problem.initial_guess, **(options.pop("theta0", None) or {})}
    unknown = set(theta0) - set(problem.params)
    if unknown:
        raise InputError(f"problem '{problem_name}' has no parameter {', '.join(unknown)}; "
                         f"its parameters: {', '.join(problem.params)}")
    return RunConfig(problem=problem_name, data=str(data), method=method, preset=preset,
                     settings=settings, theta0=theta0, **options)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def points_in_problem_order(problem: Problem, points: np.ndarray, columns: tuple[str, ...],
                            path: str) -> np.ndarray:
    missing = [c for c in problem.coords if c not in columns]
    if missing:
        raise InputError(f"{path}: field 'observations/@columns': has {columns}, the problem "
                         f"'{problem.name}' needs {problem.coords}")
    return points[:, [columns.index(c) for c in problem.coords]]


def reference_points(problem: Problem, data: SolutionFile) -> np.ndarray:
    """All nodes of the data file's grid (or mesh vertices × times), as rows of coordinates in
    the problem's order, in the order of `data.u`'s entries."""
    axes = [np.arange(data.axis_length("vertex")) if a == "vertex" else data.grid[a]
            for a in data.axes]
    mesh = np.meshgrid(*axes, indexing="ij")
    by_axis = {a: m.reshape(-1) for a, m in zip(data.axes, mesh, strict=True)}
    if "vertex" in by_axis:
        vertices = data.mesh.vertices[by_axis.pop("vertex").astype(int)]
        by_axis.update({name: vertices[:, i] for i, name in enumerate(("x", "y", "z")[
            :vertices.shape[1]])})
    return np.column_stack([by_axis[c] for c in problem.coords])


class Progress:
    """A one-line progress bar on a terminal; a line every 10% otherwise (logs, CI)."""

    def __init__(self, label: str, total: int, start: int = 0):
        self.label, self.total, self.start_step = label, max(total, 1), start
        self.tty = sys.stdout.isatty()
        self.t0 = time.perf_counter()
        self.next_line = start + self.total // 10

    def update(self, step: int, info: str, force: bool = False) -> None:
        done = step + 1
        if not (self.tty or force or done >= self.next_line):
            return
        rate = (done - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        bar = "#" * int(20 * done / self.total)
        line = (f"{self.label:<9} [{bar:<20}] {done}/{self.total} {rate:6.1f} it/s "
                f"eta {eta:5.0f}s | {info}")
        if self.tty:
            print("\r" + line[:150], end="\n" if done >= self.total else "", flush=True)
        else:
            print(line, flush=True)
            self.next_line = done + self.total // 10


def _format_losses(losses: dict[str, float], theta: np.ndarray, names) -> str:
    parts = [f"{k} {v:.2e}" for k, v in losses.items()]
    parts += [f"{n} {v:.4f}" for n, v in zip(names, theta, strict=True)]
    return " ".join(parts)


class Run:
    """One training run in a directory."""

    def __init__(self, config: RunConfig, out: str | os.PathLike, problem: Problem | None = None,
                 data: SolutionFile | None = None, u0: Callable | None = None):
        """`problem`, `data` and `u0` (a function of points giving the numerical solution at the
        initial guess) let an application pass objects built in memory (e.g. a patient's
        problem); by default they come from the registry and the files named in `config`."""
        self.config, self.out = config, Path(out)
        self.problem = problem or get_problem(config.problem)
        self.device = pick_device(config.device)
        self.data = data or read_solution(config.data)
        self.u0_function = u0
        if self.data.problem != config.problem:
            raise InputError(f"{config.data}: field '/@problem': is '{self.data.problem}', "
                             f"but training problem '{config.problem}'")
        if self.data.observations is None:
            raise InputError(f"{config.data}: field 'observations': missing; make the file "
                             "with `bilo solve ... --out FILE.h5`")
        torch.manual_seed(config.seed)
        s = config.settings
        theta0 = torch.tensor([config.theta0[p] for p in self.problem.params],
                              dtype=torch.float32)
        kwargs = ({"w_rgrad": config.w_rgrad} if config.method == "bilo"
                  else {"w_dat": config.w_dat})
        constants = {k: v for k, v in self.data.params.items() if k not in self.problem.params}
        self.method: Method = METHODS[config.method](
            self.problem, s.width, s.depth, theta0, s.lr_net, s.lr_theta, constants=constants,
            w_reg=config.w_reg, **kwargs).to(self.device)
        # initial guesses sampled once and interpolated at the redrawn points (a GRF draw
        # costs about a second)
        fine = np.linspace(0.0, 1.0, 4001)
        self._f0_samples = {name: (fine, spec.initial(fine))
                            for name, spec in self.problem.functions.items()}
        self.batch = self._make_batch()
        self.step = 0  # steps done, pre-training then fine-tuning
        self.history: dict[str, list] = {key: [] for key in TRACKS}
        self.wall = {"pretrain": 0.0, "finetune": 0.0}

    # -- data ---------------------------------------------------------------------------------
    def _make_batch(self) -> Batch:
        obs = self.data.observations
        points = points_in_problem_order(self.problem, obs.points, obs.columns, self.config.data)
        collocation, u0 = self._collocation(step=0)
        reg_x, f0 = self._regulariser_points(step=0)
        return Batch(collocation=collocation, obs_points=self._tensor(points),
                     obs_values=self._tensor(obs.values), u0=u0, reg_x=reg_x, f0=f0)

    def _tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

    def _regulariser_points(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Points in x for the functions' regulariser and f0 fit, and f0 there: evenly spaced,
        or (`stratified_reg`, after step 0) one uniform draw in each of n_reg equal cells, so
        that f cannot grow wiggles unseen between fixed points."""
        n = self.config.settings.n_reg
        x = np.linspace(0.0, 1.0, n)
        if self.config.settings.stratified_reg and step > 0:
            x = (np.arange(n) + np.random.default_rng(step).random(n)) / n
        return self._tensor(x), {name: self._tensor(np.interp(x, *samples))
                                 for name, samples in self._f0_samples.items()}

    def _collocation(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Residual points (drawn anew each step for problems that resample) and u0 there."""
        points = self.problem.collocation(self.config.settings.n_res, seed=step)
        if self.u0_function is not None:
            u0 = self.u0_function(points.numpy())
        else:
            u0 = self._u0_at(points.numpy()) if self.config.u0 else None
        return self._tensor(points), None if u0 is None else self._tensor(u0)

    def _u0_at(self, collocation: np.ndarray) -> np.ndarray:
        from solvers.exchange import write_solution
        from solvers.problems import run_reference, sample

        path = self.config.u0
        if path == "auto":
            path = str(self.out / "u0.h5")
            if not Path(path).exists():
                initial = {name: spec.initial for name, spec in self.problem.functions.items()}
                fixed = {k: v for k, v in self.data.params.items()
                         if k not in self.problem.params}
                write_solution(path, run_reference(self.problem.name,
                                                   {**fixed, **self.config.theta0}, initial))
        u0 = read_solution(path)
        mismatch = {k: (v, u0.params.get(k)) for k, v in self.config.theta0.items()
                    if not np.isclose(u0.params.get(k, np.nan), v)}
        if mismatch:
            raise InputError(f"{path}: field 'params': solved at {u0.params}, but the initial "
                             f"guess is {self.config.theta0}")
        return sample(u0, collocation, self.problem.coords)

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {"config": self.config.to_json(), "step": self.step, "history": self.history,
                 "wall": self.wall, "method": self.method.state_dict(),
                 "torch_rng": torch.get_rng_state()}
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.exists():
            raise InputError(f"{path}: no checkpoint to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a torn or foreign file: say so in one line
            raise InputError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
        saved = RunConfig.from_json(state["config"])
        if (saved.problem, saved.method, saved.data) != (self.config.problem,
                                                         self.config.method, self.config.data):
            raise InputError(f"{path}: checkpoint is for {saved.method} on {saved.problem} with "
                             f"{saved.data}, not this run")
        self.method.load_state_dict(state["method"])
        self.method.to(self.device)
        self.step, self.history, self.wall = state["step"], state["history"], state["wall"]
        torch.set_rng_state(state["torch_rng"])

    # -- loop ---------------------------------------------------------------------------------
    def _record(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        values = {k: float(v.detach()) for k, v in losses.items()}
        n_before = len(self.history["step"])
        self.history["step"].append(self.step)
        self.history["theta"].append(self.method.theta.detach().cpu().tolist())
        self.history["wall"].append(sum(self.wall.values()))
        for key in values.keys() | (self.history.keys() - set(TRACKS)):
            # a loss used in one phase only (u0, dat) is NaN in the other
            column = self.history.setdefault(key, [float("nan")] * n_before)
            column.append(values.get(key, float("nan")))
        return values

    def train(self) -> None:
        s, cfg = self.config.settings, self.config
        phases = [("pretrain", s.pretrain_steps, self.method.pretrain_step),
                  ("finetune", s.finetune_steps, self.method.finetune_step)]
        offset = 0
        for phase, n_steps, step_fn in phases:
            end = offset + n_steps
            if self.step >= end:
                offset = end
                continue
            progress = Progress(phase, n_steps, self.step - offset)
            t0, wall0 = time.perf_counter(), self.wall[phase]
            while self.step < end:
                if self.problem.resample_collocation and self.step > 0:
                    self.batch.collocation, self.batch.u0 = self._collocation(self.step)
                if self.problem.functions and s.stratified_reg and self.step > 0:
                    self.batch.reg_x, self.batch.f0 = self._regulariser_points(self.step)
                losses = step_fn(self.batch)
                local = self.step - offset
                last = self.step == end - 1
                if local % cfg.record_every == 0 or last:
                    values = self._record(losses)
                    progress.update(local, _format_losses(
                        values, self.method.theta.detach().cpu().numpy(), self.problem.params),
                        force=last)
                self.step += 1
                self.wall[phase] = wall0 + time.perf_counter() - t0
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
            offset = end
        self.save_checkpoint()

    # -- results ------------------------------------------------------------------------------
    def u_on_reference_grid(self) -> np.ndarray:
        points = torch.as_tensor(reference_points(self.problem, self.data),
                                 dtype=torch.float32, device=self.device)
        with torch.no_grad():
            u = torch.cat([self.method.predict(chunk) for chunk in points.split(65536)])
        return u.cpu().numpy().astype(np.float64).reshape(self.data.u.shape)

    def theta(self) -> dict[str, float]:
        values = self.method.theta.detach().cpu().tolist()
        return dict(zip(self.problem.params, values, strict=True))

    def functions_on(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The inferred functions at points x."""
        x_t = self._tensor(x)
        with torch.no_grad():
            return {name: net(x_t).cpu().numpy().astype(np.float64)
                    for name, net in self.method.function_nets.items()}


def train(config: RunConfig, out: str | os.PathLike, resume: bool = False,
          validate_after: bool = True, **objects) -> dict:
    """Run (or resume) a training run; write result.h5, summary.json and figures in `out`.
    `objects` (problem, data, u0) are passed to `Run`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(config, out, **objects)
    if resume:
        run.load_checkpoint()
        print(f"resuming from step {run.step} ({run.checkpoint_path})")
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=2))
    print(f"{config.method} on {config.problem} ({config.data}), preset {config.preset}, "
          f"device {run.device}, {platform.node()}")
    run.train()
    summary = write_results(run)
    if validate_after:
        from bilo.validate import validate

        summary = validate(out)
    return summary
