"""The training loop of the network methods: data in, pre-training, fine-tuning, checkpoints.

A `Run` trains one method's surrogate on one data file in a directory (`checkpoint.pt` while
training) and hands back a `bilo.results.Result`; `bilo.strategies` wraps it as the `bilo` and
`pinn` strategies. A run resumes exactly from its checkpoint (weights, θ, both Adam states,
the step, the torch RNG).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bilo.methods import Batch, Method
from bilo.model import Problem
from bilo.results import FUNCTION_POINTS, TRACKS, Result, reference_points
from solvers.common import InputError, atomic_path
from solvers.exchange import SolutionFile, read_solution


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def _format_losses(losses: dict[str, float], theta: np.ndarray, names) -> str:
    parts = [f"{k} {v:.2e}" for k, v in losses.items()]
    parts += [f"{n} {v:.4f}" for n, v in zip(names, theta, strict=True)]
    return " ".join(parts)


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
        # initial guesses sampled once and interpolated at the redrawn points (a GRF draw
        # costs about a second)
        fine = np.linspace(0.0, 1.0, 4001)
        self._f0_samples = {name: (fine, spec.initial(fine))
                            for name, spec in problem.functions.items()}
        self._u0 = self._u0_function(options.u0)
        self.batch = self._make_batch()
        self.step = 0  # steps done, pre-training then fine-tuning
        self.history: dict[str, list] = {key: [] for key in TRACKS}
        self.wall = {"pretrain": 0.0, "finetune": 0.0}

    # -- data ---------------------------------------------------------------------------------
    def _make_batch(self) -> Batch:
        obs = self.data.observations
        points = obs.points_in(self.problem.coords, self.data_path or "the data")
        collocation, u0 = self._collocation(step=0)
        reg_x, f0 = self.regulariser_points(step=0)
        return Batch(collocation=collocation, obs_points=self._tensor(points),
                     obs_values=self._tensor(obs.values), u0=u0, reg_x=reg_x, f0=f0)

    def _tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

    def regulariser_points(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Points in x for the functions' regulariser and f0 fit, and f0 there: evenly spaced,
        or (`stratified_reg`, after step 0) one uniform draw in each of n_reg equal cells, so
        that f cannot grow wiggles unseen between fixed points."""
        n = self.options.settings.n_reg
        x = np.linspace(0.0, 1.0, n)
        if self.options.settings.stratified_reg and step > 0:
            x = (np.arange(n) + np.random.default_rng(step).random(n)) / n
        return self._tensor(x), {name: self._tensor(np.interp(x, *samples))
                                 for name, samples in self._f0_samples.items()}

    def _collocation(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Residual points (drawn anew each step for problems that resample) and u0 there."""
        points = self.problem.collocation(self.options.settings.n_res, seed=step)
        u0 = None if self._u0 is None else self._u0(points.numpy())
        return self._tensor(points), None if u0 is None else self._tensor(u0)

    def _u0_function(self, u0) -> Callable | None:
        """The solution at the initial guess as a function of points, from `options.u0`."""
        from bilo.synthetic import run_reference
        from solvers.exchange import write_solution
        from solvers.reference import sample

        if u0 is None or callable(u0):
            return u0
        theta0 = self.options.theta0
        path = str(self.out / "u0.h5") if u0 == "auto" else u0
        if u0 == "auto" and not Path(path).exists():
            initial = {name: spec.initial for name, spec in self.problem.functions.items()}
            fixed = {k: v for k, v in self.data.params.items() if k not in self.problem.params}
            self.out.mkdir(parents=True, exist_ok=True)
            write_solution(path, run_reference(self.problem, {**fixed, **theta0}, initial))
        solution = read_solution(path)
        mismatch = {k: v for k, v in theta0.items()
                    if not np.isclose(solution.params.get(k, np.nan), v)}
        if mismatch:
            raise InputError(f"{path}: field 'params': solved at {solution.params}, but the "
                             f"initial guess is {theta0}")
        return lambda points: sample(solution, points, self.problem.coords)

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def identity(self) -> dict:
        return {"method": self.method_name, "problem": self.problem.name,
                "data": self.data_path}

    def save_checkpoint(self) -> None:
        state = {"identity": self.identity(), "step": self.step, "history": self.history,
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
        saved = state.get("identity", {})
        if saved != self.identity():
            raise InputError(f"{path}: checkpoint is for {saved.get('method')} on "
                             f"{saved.get('problem')} with {saved.get('data')}, not this run")
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
        s, options = self.options.settings, self.options
        phases = [("pretrain", s.pretrain_steps, self.method.pretrain_step),
                  ("finetune", s.finetune_steps, self.method.finetune_step)]
        offset = 0
        for phase, n_steps, step_fn in phases:
            end = offset + n_steps
            if self.step >= end:
                offset = end
                continue
            # a bar on a terminal; in logs (no terminal) a line about every 10 %
            bar = tqdm(total=n_steps, initial=self.step - offset, desc=phase, unit="step",
                       mininterval=0.5, maxinterval=3600,
                       miniters=None if self._interactive() else max(n_steps // 10, 1))
            t0, wall0 = time.perf_counter(), self.wall[phase]
            while self.step < end:
                if self.problem.resample_collocation and self.step > 0:
                    self.batch.collocation, self.batch.u0 = self._collocation(self.step)
                if self.problem.functions and s.stratified_reg and self.step > 0:
                    self.batch.reg_x, self.batch.f0 = self.regulariser_points(self.step)
                losses = step_fn(self.batch)
                if (self.step - offset) % options.record_every == 0 or self.step == end - 1:
                    values = self._record(losses)
                    bar.set_postfix_str(_format_losses(
                        values, self.method.theta.detach().cpu().numpy(), self.problem.params),
                        refresh=False)
                self.step += 1
                bar.update(1)
                self.wall[phase] = wall0 + time.perf_counter() - t0
                if self.step % options.checkpoint_every == 0:
                    self.save_checkpoint()
            bar.close()
            offset = end
        self.save_checkpoint()

    @staticmethod
    def _interactive() -> bool:
        import sys

        return sys.stderr.isatty()

    # -- results ------------------------------------------------------------------------------
    def result(self) -> Result:
        surrogate = self.method.surrogate
        u = surrogate.predict_numpy(reference_points(self.problem, self.data))
        history = {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}
        history["theta"] = history["theta"].reshape(len(history["step"]), -1)
        s = self.options.settings
        return Result(
            method=self.method_name, problem=self.problem, data=self.data,
            data_path=self.data_path, params=surrogate.params(),
            functions=surrogate.functions_on(FUNCTION_POINTS), u=u.reshape(self.data.u.shape),
            history=history, steps={"pretrain": s.pretrain_steps, "finetune": s.finetune_steps},
            wall_s=dict(self.wall), device=str(self.device), w_reg=self.method.w_reg,
            constants=surrogate.constants, options=self.options.to_json(),
            predict=surrogate.predict_numpy)
