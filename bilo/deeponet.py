"""The DeepONet baseline: an operator surrogate pre-trained on solver data, then inference by
gradient descent through the frozen surrogate (paper Part I, Figs. 5, 7, 10).

The operator G(θ)(y) ≈ u(y; θ) is a DeepONet: a branch net b(·) on the parameters θ (or, for an
unknown function f, on f at `sensors` evenly spaced points of [0, 1]) and a trunk net t(·) on the
coordinates y = (x, t, ...), N(θ, y) = Σ_k b_k(θ)·t_k(y)/√q + c, and u = the problem's declared
output transform of N (`Problem.output`: initial and boundary conditions held exactly, as for
BiLO's network). Both nets are tanh MLPs (`depth` hidden layers of `width`, q = `latent`
outputs, the trunk's outputs through tanh too); the branch inputs are scaled to [−1, 1] by the
dataset's range.

Phases (one run, checkpointed every `checkpoint_every` steps and resumable exactly):

* `pretrain`: Adam on the mean squared error over `batch` samples per step (all grid points of
  each), on 90 % of the dataset; the learning rate decays as lr·0.05^(step/steps). At its end
  the relative L2 error on the held-out 10 % (a seeded split) is printed and stored.
  `pretrained` (an earlier run on the same dataset) takes that run's operator instead: its
  pre-training steps, wall time and held-out error are reported as this run's.
* `f0` (unknown functions only): f's network fitted to the initial guess f0, 500 steps.
* `finetune` (inference): the surrogate frozen, Adam on θ (or on f's network) over the problem's
  likelihood misfit at the observations (+ w_reg·R(f)), θ projected onto its bounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bilo.functions import FunctionNet
from bilo.jet import Jet
from bilo.model import Problem
from bilo.results import FUNCTION_POINTS, Result, reference_points
from bilo.train import _signals_caught, pick_device, read_checkpoint
from solvers.common import Diverged, InputError, Interrupted, atomic_path
from solvers.datasets import Dataset, read_dataset
from solvers.exchange import SolutionFile

F0_STEPS = 500
HELDOUT = 0.1


def _mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(depth):
        layers += [nn.Linear(n_in if k == 0 else width, width), nn.Tanh()]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class DeepONet(nn.Module):
    """N(v, y) = b(scale(v)) · tanh(t(y)) / √q + c, for every pair of rows of v and y."""

    def __init__(self, n_branch: int, n_coords: int, width: int, depth: int, latent: int,
                 lo: np.ndarray, hi: np.ndarray):
        super().__init__()
        self.branch = _mlp(n_branch, width, depth, latent)
        self.trunk = _mlp(n_coords, width, depth, latent)
        self.bias = nn.Parameter(torch.zeros(()))
        self.latent = latent
        centre = (np.asarray(hi) + np.asarray(lo)) / 2
        half = np.maximum((np.asarray(hi) - np.asarray(lo)) / 2, 1e-12)
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32))
        self.register_buffer("spread", torch.as_tensor(half, dtype=torch.float32))

    def forward(self, inputs: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(S, n_branch), (P, n_coords) -> (S, P)."""
        b = self.branch((inputs - self.centre) / self.spread)
        t = torch.tanh(self.trunk(points))
        return b @ t.T / math.sqrt(self.latent) + self.bias


def grid_points(problem: Problem, axes: tuple[str, ...], grid: dict[str, np.ndarray]):
    """The nodes of a grid as rows in the problem's coordinate order (u's C order)."""
    mesh = np.meshgrid(*(grid[a] for a in axes), indexing="ij")
    by_axis = {a: m.reshape(-1) for a, m in zip(axes, mesh, strict=True)}
    missing = [c for c in problem.coords if c not in by_axis]
    if missing:
        raise InputError(f"the dataset's grid has axes {axes}, not the coordinates "
                         f"{problem.coords} of problem '{problem.name}'")
    return np.column_stack([by_axis[c] for c in problem.coords])


@dataclass
class Split:
    train: np.ndarray
    test: np.ndarray


def split(n: int, seed: int) -> Split:
    """A seeded split: 10 % of the samples (at least one) held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(HELDOUT * n))) if n > 1 else 0
    return Split(train=np.sort(order[n_test:]), test=np.sort(order[:n_test]))


class Operator:
    """The DeepONet with the problem's output transform: u(inputs, points)."""

    def __init__(self, problem: Problem, dataset: Dataset, options, sensors: np.ndarray | None):
        self.problem = problem
        self.functions = tuple(problem.functions)
        self.sensors = sensors
        self.names = problem.pde_params
        self.constants = dict(dataset.constants)
        inputs = self.branch_inputs(dataset)
        self.net = DeepONet(inputs.shape[1], len(problem.coords), options.width, options.depth,
                            options.latent, inputs.min(axis=0), inputs.max(axis=0))

    def branch_inputs(self, dataset: Dataset) -> np.ndarray:
        """The branch input of every sample: θ in the problem's order, or f at the sensors."""
        if self.functions:
            return np.concatenate([np.stack([np.interp(self.sensors, dataset.function_x, row)
                                             for row in dataset.functions[name]])
                                   for name in self.functions], axis=1)
        order = [dataset.names.index(p) for p in self.names]
        return dataset.theta[:, order]

    def u(self, inputs: torch.Tensor, points: torch.Tensor, theta: dict,
          functions: dict[str, torch.Tensor]) -> torch.Tensor:
        """u (S, P): `theta` values (S, 1) or scalars, `functions` values at the points' x."""
        net = Jet.constant(self.net(inputs, points))
        coords = {c: Jet.constant(points[:, i]) for i, c in enumerate(self.problem.coords)}
        theta = {k: Jet.constant(v) if torch.is_tensor(v) else v for k, v in theta.items()}
        functions = {k: Jet.constant(v) for k, v in functions.items()}
        return self.problem.output(net, coords, theta | self.constants, functions).value


class DeepONetRun:
    """Pre-training on a dataset, then inference on one data file, in a run directory."""

    def __init__(self, problem: Problem, data: SolutionFile, options, out: str | Path,
                 data_path: str | None = None, method: str = "deeponet", log=print):
        self.problem, self.data, self.options = problem, data, options
        self.out, self.data_path, self.method, self.log = Path(out), data_path, method, log
        if not options.dataset:
            raise InputError("--dataset: the deeponet method needs a dataset made by "
                             f"`bilo dataset {problem.name} ... --out DS.h5`")
        self.dataset_path = str(Path(options.dataset).resolve())
        dataset = read_dataset(options.dataset)
        self._check(dataset)
        self.device = pick_device(options.device)
        torch.manual_seed(options.seed)
        sensors = np.linspace(0.0, 1.0, options.sensors) if problem.functions else None
        self.operator = Operator(problem, dataset, options, sensors)
        self.operator.net.to(self.device)
        # training data: branch inputs, the grid's points, u per sample (float32)
        self.inputs = self._tensor(self.operator.branch_inputs(dataset))
        self.points = self._tensor(grid_points(problem, dataset.axes, dataset.grid))
        self.targets = self._tensor(dataset.u.reshape(dataset.n_samples, -1))
        self.sample_theta = self._tensor(dataset.theta[:, [dataset.names.index(p)
                                                           for p in problem.pde_params]])
        self.sample_functions = {name: self._tensor(np.stack([
            np.interp(self.points[:, problem.coords.index("x")].cpu().numpy(),
                      dataset.function_x, row) for row in dataset.functions[name]]))
            for name in problem.functions}
        self.split = split(dataset.n_samples, options.seed)
        self.n_samples = dataset.n_samples
        self.opt_net = torch.optim.Adam(self.operator.net.parameters(), lr=options.lr_net)
        # the upper level: θ and the functions' networks
        theta0 = [options.theta0[p] for p in problem.params]
        self.theta = nn.Parameter(torch.tensor(theta0, dtype=torch.float32, device=self.device))
        self.function_nets = nn.ModuleDict({name: FunctionNet(spec) for name, spec in
                                            problem.functions.items()}).to(self.device)
        self.w_reg = {name: spec.w_reg if options.w_reg is None else options.w_reg
                      for name, spec in problem.functions.items()}
        self.opt_upper = torch.optim.Adam([self.theta, *self.function_nets.parameters()],
                                          lr=options.lr_theta)
        inf = float("inf")
        limits = [problem.bounds.get(p, (-inf, inf)) for p in problem.params]
        self.theta_lo = torch.tensor([lo for lo, _ in limits], device=self.device)
        self.theta_hi = torch.tensor([hi for _, hi in limits], device=self.device)
        obs = data.observations
        self.obs_points = self._tensor(obs.points_in(problem.coords, data_path or "the data"))
        self.obs_values = self._tensor(obs.values)
        self.reg_x = torch.linspace(0.0, 1.0, 101, device=self.device)
        self.f0 = {name: self._tensor(spec.initial(self.reg_x.cpu().numpy().astype(np.float64)))
                   for name, spec in problem.functions.items()}
        self.generator = torch.Generator().manual_seed(options.seed)
        self.step = 0
        self.history: dict[str, list] = {"step": [], "theta": [], "wall": []}
        self.wall = {"pretrain": 0.0, "f0": 0.0, "finetune": 0.0}
        self.heldout: dict | None = None
        self._checkpoint_step: int | None = None
        self.pretrain_steps = options.pretrain_steps
        self.pretrained_from = None
        if options.pretrained:
            self._load_pretrained(options.pretrained)

    def architecture(self) -> dict:
        o = self.options
        return {"width": o.width, "depth": o.depth, "latent": o.latent, "sensors": o.sensors,
                "seed": o.seed}

    def _load_pretrained(self, source: str) -> None:
        """The pre-trained operator of an earlier deeponet run on the same dataset (its
        pre-training steps, wall time and held-out error are this run's)."""
        path = Path(source)
        path = path / "checkpoint.pt" if path.is_dir() else path
        where = f"--pretrained {source}"
        if not path.exists():
            raise InputError(f"{where}: no checkpoint.pt there")
        state = read_checkpoint(path, where)
        identity = state.get("identity", {})
        if identity.get("dataset") != self.dataset_path or identity.get(
                "problem") != self.problem.name:
            raise InputError(f"{where}: pre-trained on {identity.get('dataset')} for "
                             f"{identity.get('problem')}, not {self.dataset_path}")
        if state.get("architecture") != self.architecture():
            raise InputError(f"{where}: a network {state.get('architecture')}, not "
                             f"{self.architecture()}")
        if state.get("heldout") is None:
            raise InputError(f"{where}: its pre-training has not finished")
        self.operator.net.load_state_dict(state["net"])
        self.pretrain_steps = state["pretrain_steps"]
        self.step = self.pretrain_steps
        keep = [j for j, s in enumerate(state["history"]["step"]) if s < self.pretrain_steps]
        self.history = {k: [v[j] for j in keep] for k, v in state["history"].items()}
        self.wall["pretrain"] = state["wall"]["pretrain"]
        self.heldout = state["heldout"]
        self.pretrained_from = str(path.resolve())

    def _tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=torch.float32, device=self.device)

    def _check(self, dataset: Dataset) -> None:
        where = f"{self.options.dataset}"
        problem = self.problem
        if dataset.problem != problem.name:
            raise InputError(f"{where}: field '/@problem': a dataset of '{dataset.problem}', "
                             f"not '{problem.name}'")
        if set(dataset.names) != set(problem.pde_params):
            raise InputError(f"{where}: field 'parameters/theta': parameters {dataset.names}, "
                             f"the problem's are {problem.pde_params}")
        missing = [f for f in problem.functions if f not in dataset.functions]
        if missing:
            raise InputError(f"{where}: field 'functions/{missing[0]}': missing")
        fixed = {k: v for k, v in self.data.params.items() if k not in problem.params}
        differ = {k: (v, dataset.constants[k]) for k, v in fixed.items()
                  if k in dataset.constants and not np.isclose(v, dataset.constants[k])}
        if differ:
            k, (a, b) = next(iter(differ.items()))
            raise InputError(f"{where}: field 'constants': {k}={b:g}, the data's is {a:g}")

    # -- phases -------------------------------------------------------------------------------
    def phases(self) -> list[tuple[str, int, int]]:
        o = self.options
        f0 = F0_STEPS if self.problem.functions else 0
        n = self.pretrain_steps
        return [("pretrain", 0, n), ("f0", n, n + f0),
                ("finetune", n + f0, n + f0 + o.finetune_steps)]

    def _theta_dict(self, theta: torch.Tensor) -> dict:
        return dict(zip(self.problem.params, theta, strict=True))

    def pretrain_step(self) -> dict[str, torch.Tensor]:
        o = self.options
        train = self.split.train
        pick = torch.randint(len(train), (min(o.batch, len(train)),), generator=self.generator)
        index = torch.as_tensor(train, device=self.device)[pick.to(self.device)]
        for group in self.opt_net.param_groups:
            group["lr"] = o.lr_net * 0.05 ** (self.step / max(self.pretrain_steps, 1))
        u = self._predict_samples(index)
        loss = (u - self.targets[index]).square().mean()
        self.opt_net.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_net.step()
        return {"op": loss}

    def _predict_samples(self, index: torch.Tensor, points=None) -> torch.Tensor:
        points = self.points if points is None else points
        theta = {p: self.sample_theta[index, j:j + 1]
                 for j, p in enumerate(self.problem.pde_params)}
        functions = {k: v[index] for k, v in self.sample_functions.items()}
        return self.operator.u(self.inputs[index], points, theta, functions)

    def predict(self, points: torch.Tensor) -> torch.Tensor:
        """u at points (P,) for the current θ / functions, through the frozen operator."""
        x = points[:, self.problem.coords.index("x")] if self.problem.functions else None
        if self.problem.functions:
            sensors = torch.as_tensor(self.operator.sensors, dtype=torch.float32,
                                      device=self.device)
            inputs = torch.cat([self.function_nets[k](sensors) for k in
                                self.operator.functions])[None, :]
            functions = {k: net(x) for k, net in self.function_nets.items()}
        else:
            inputs = self.theta[[self.problem.params.index(p)
                                 for p in self.problem.pde_params]][None, :]
            functions = {}
        return self.operator.u(inputs, points, self._theta_dict(self.theta), functions)[0]

    def f0_step(self) -> dict[str, torch.Tensor]:
        loss = sum((net(self.reg_x) - self.f0[k]).square().mean()
                   for k, net in self.function_nets.items())
        self.opt_upper.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_upper.step()
        return {"f0": loss}

    def finetune_step(self) -> dict[str, torch.Tensor]:
        losses = {"dat": self.problem.likelihood.value(self.predict(self.obs_points),
                                                       self.obs_values,
                                                       self._theta_dict(self.theta))}
        objective = losses["dat"]
        if self.function_nets:
            terms = {k: self.problem.functions[k].regulariser.of_slopes(
                net.gradient(self.reg_x)) for k, net in self.function_nets.items()}
            losses["reg"] = sum(terms.values())
            objective = objective + sum(self.w_reg[k] * v for k, v in terms.items())
        self.opt_upper.zero_grad(set_to_none=True)
        objective.backward(inputs=[self.theta, *self.function_nets.parameters()])
        self.opt_upper.step()
        with torch.no_grad():
            self.theta.clamp_(self.theta_lo, self.theta_hi)
        return losses

    # -- held-out accuracy --------------------------------------------------------------------
    def evaluate(self, index: np.ndarray) -> dict:
        """Relative L2 errors of the operator on the samples `index` (over all grid points):
        the whole set's, the mean and the largest per sample."""
        if len(index) == 0:
            return {"n": 0}
        errors, total, norm = [], 0.0, 0.0
        with torch.no_grad():
            for part in np.array_split(index, max(1, len(index) // 256)):
                part = torch.as_tensor(part, device=self.device)
                diff = self._predict_samples(part) - self.targets[part]
                size = self.targets[part].square().sum(dim=1)
                errors += (diff.square().sum(dim=1) / size.clamp_min(1e-30)).sqrt().tolist()
                total += float(diff.square().sum())
                norm += float(size.sum())
        return {"n": int(len(index)), "rel_l2": math.sqrt(total / max(norm, 1e-30)),
                "rel_l2_mean": float(np.mean(errors)), "rel_l2_max": float(np.max(errors))}

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def identity(self) -> dict:
        return {"method": self.method, "problem": self.problem.name, "data": self.data_path,
                "dataset": self.dataset_path}

    def save_checkpoint(self) -> None:
        self._checkpoint_step = self.step
        state = {"identity": self.identity(), "step": self.step, "history": self.history,
                 "wall": self.wall, "heldout": self.heldout,
                 "pretrain_steps": self.pretrain_steps, "architecture": self.architecture(),
                 "pretrained_from": self.pretrained_from,
                 "net": self.operator.net.state_dict(), "opt_net": self.opt_net.state_dict(),
                 "theta": self.theta.detach().cpu(),
                 "functions": self.function_nets.state_dict(),
                 "opt_upper": self.opt_upper.state_dict(),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.exists():
            raise InputError(f"{path}: no checkpoint to resume from")
        state = read_checkpoint(path)
        if state.get("identity") != self.identity():
            raise InputError(f"{path}: checkpoint is for {state.get('identity')}, not this run")
        self.operator.net.load_state_dict(state["net"])
        self.opt_net.load_state_dict(state["opt_net"])
        self.function_nets.load_state_dict(state["functions"])
        self.opt_upper.load_state_dict(state["opt_upper"])
        with torch.no_grad():
            self.theta.copy_(state["theta"].to(self.device))
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.history, self.wall = state["step"], state["history"], state["wall"]
        self.heldout = state["heldout"]
        self.pretrain_steps = state["pretrain_steps"]
        self.pretrained_from = state["pretrained_from"]
        self._checkpoint_step = self.step

    # -- loop ---------------------------------------------------------------------------------
    def _record(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        values = {k: float(v.detach()) for k, v in losses.items()}
        n_before = len(self.history["step"])
        self.history["step"].append(self.step)
        self.history["theta"].append(self.theta.detach().cpu().tolist())
        self.history["wall"].append(sum(self.wall.values()))
        for key in values.keys() | (self.history.keys() - {"step", "theta", "wall"}):
            column = self.history.setdefault(key, [float("nan")] * n_before)
            column.append(values.get(key, float("nan")))
        return values

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        values = [float(v.detach()) for v in losses.values()] + self.theta.detach().tolist()
        if all(math.isfinite(v) for v in values):
            return
        kept = (f"{self.checkpoint_path} keeps the last finite state (step "
                f"{self._checkpoint_step})" if self._checkpoint_step is not None
                else "no checkpoint was written before it")
        raise Diverged(f"step {self.step}: losses {dict(zip(losses, values, strict=False))}: "
                       f"training diverged; {kept}; a smaller learning rate may help")

    def train(self) -> None:
        with _signals_caught() as caught:
            self._train(caught)

    def _train(self, caught: list[int]) -> None:
        o = self.options
        steps = {"pretrain": self.pretrain_step, "f0": self.f0_step,
                 "finetune": self.finetune_step}
        for name, start, end in self.phases():
            if self.step < end:
                clock, wall0 = time.perf_counter(), self.wall[name]
                every = max((end - start) // 10, 1)
                while self.step < end and not caught:
                    losses = steps[name]()
                    self._check_finite(losses)
                    last = self.step == end - 1
                    if (self.step - start) % o.record_every == 0 or last:
                        self._record(losses)
                    self.step += 1
                    self.wall[name] = wall0 + time.perf_counter() - clock
                    if ((self.step - start) % every == 0 or last) and self.log:
                        shown = " ".join(f"{k} {float(v.detach()):.3e}" for k, v in losses.items())
                        theta = " ".join(f"{p} {v:.4f}" for p, v in zip(
                            self.problem.params, self.theta.detach().tolist(), strict=True))
                        self.log(f"{name} {self.step - start}/{end - start}: {shown}"
                                 f"{' ' + theta if name == 'finetune' and theta else ''}, "
                                 f"{self.wall[name]:.1f} s")
                    if self.step % o.checkpoint_every == 0:
                        self.save_checkpoint()
                if caught:
                    self.save_checkpoint()
                    import signal

                    raise Interrupted(caught[0], f"stopped by {signal.Signals(caught[0]).name} "
                                      f"at step {self.step}; {self.checkpoint_path} holds it: "
                                      "continue with --resume")
            if name == "pretrain" and self.heldout is None:
                self.heldout = {"heldout": self.evaluate(self.split.test),
                                "train": self.evaluate(self.split.train)}
                h, t = self.heldout["heldout"], self.heldout["train"]
                if self.log and h["n"]:
                    self.log(f"surrogate on the held-out {h['n']} of {self.n_samples} samples: "
                             f"relative L2 error {h['rel_l2']:.3e} (per sample mean "
                             f"{h['rel_l2_mean']:.3e}, max {h['rel_l2_max']:.3e}); on the "
                             f"{t['n']} training samples {t['rel_l2']:.3e}")
        self.save_checkpoint()

    # -- result -------------------------------------------------------------------------------
    def result(self) -> Result:
        problem, data = self.problem, self.data

        def predict(points: np.ndarray) -> np.ndarray:
            tensor = self._tensor(points)
            with torch.no_grad():
                return torch.cat([self.predict(p) for p in tensor.split(65536)]
                                 ).cpu().numpy().astype(np.float64)

        history = {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}
        history["theta"] = history["theta"].reshape(len(history["step"]), -1)
        x = torch.as_tensor(FUNCTION_POINTS, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            functions = {k: net(x).cpu().numpy().astype(np.float64)
                         for k, net in self.function_nets.items()}
        bounds = {name: (start, end) for name, start, end in self.phases()}
        steps = {name: int(min(max(self.step - a, 0), b - a)) for name, (a, b) in bounds.items()
                 if b > a}
        o = self.options
        return Result(
            method=self.method, problem=problem, data=data, data_path=self.data_path,
            params=dict(zip(problem.params, self.theta.detach().cpu().tolist(), strict=True)),
            functions=functions, u=predict(reference_points(problem, data)).reshape(
                data.u.shape), history=history, steps=steps,
            wall_s={k: v for k, v in self.wall.items() if k in steps}, device=str(self.device),
            w_reg=self.w_reg, constants={k: v for k, v in data.params.items()
                                         if k not in problem.params},
            options=o.to_json(), predict=predict,
            extra={"dataset": self.dataset_path, "dataset_samples": self.n_samples,
                   "pretrained_from": self.pretrained_from,
                   "surrogate_heldout": (self.heldout or {}).get("heldout"),
                   "surrogate_train": (self.heldout or {}).get("train"),
                   "surrogate": f"DeepONet: branch and trunk {o.depth}x{o.width} tanh, "
                                f"{o.latent} basis functions"})
