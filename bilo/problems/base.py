"""What a PDE problem declares for the trainer.

A problem names its coordinates and parameters, maps the raw network output to u so that
boundary and initial conditions hold exactly (`output`), and writes its residual (`residual`)
in jet arithmetic. Written once, the same code gives BiLO the residual together with its
θ-derivatives (θ passed as jet variables) and gives PINN the plain residual (θ passed as
tensors). The reference solver is the `solvers.problems` entry of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bilo.functions import FunctionSpec
from bilo.jet import Jet, Key


@dataclass(frozen=True)
class Settings:
    """Training settings that a preset fills in for a problem."""

    width: int = 128
    depth: int = 2
    n_res: tuple[int, ...] = (51, 51)
    pretrain_steps: int = 10_000
    finetune_steps: int = 50_000
    lr_net: float = 1e-3
    lr_theta: float = 1e-3
    # unknown functions: points in x for the regulariser mean(f′²) and the f0 fit (the paper's
    # T_reg has 101). `stratified_reg` redraws them each step, one per cell of that grid: with
    # fixed points f grows wiggles between them, and BiLO on heat diverged after 5000 steps
    # (docs/functions.md)
    n_reg: int = 101
    stratified_reg: bool = True


class Problem:
    name: str = ""
    coords: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    initial_guess: dict[str, float] = {}
    # box constraints (lo, hi) on parameters: θ is projected onto them after every upper-level
    # step (positivity of a rate; a prior range of an observation parameter)
    bounds: dict[str, tuple[float, float]] = {}
    # parameters that enter the observation model only (e.g. segmentation thresholds): upper
    # level variables that are neither network inputs nor in the residual
    observation_params: tuple[str, ...] = ()
    # unknown functions of x, inferred through the auxiliary variable z = f(x)
    functions: dict[str, FunctionSpec] = {}
    # derivatives of u (multi-indices over coordinates) that the residual reads
    residual_keys: tuple[Key, ...] = ((),)
    presets: dict[str, Settings] = {}
    resample_collocation: bool = False
    # factor on the initial first-layer weights of each coordinate (default 1): larger for a
    # coordinate along which u has features much finer than the coordinate's range
    coord_init_scale: dict[str, float] = {}

    # In `output` and `residual`: `theta` maps each parameter name to a jet (BiLO) or a tensor
    # (PINN), and also holds the data file's fixed parameters (e.g. the heat equation's D) as
    # floats; `functions` maps each unknown function to its jet (BiLO: f(x) + ζ).
    def output(self, net: Jet, coords: dict[str, Jet], theta: dict, functions: dict) -> Jet:
        """u from the raw network output; default: no transform."""
        return net

    def residual(self, u: Jet, coords: dict[str, Jet], theta: dict, functions: dict) -> Jet:
        raise NotImplementedError

    @property
    def pde_params(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if p not in self.observation_params)

    def data_loss(self, u: torch.Tensor, observed: torch.Tensor, theta: dict) -> torch.Tensor:
        """Misfit between u at the observation points and the observed values (default MSE)."""
        return (u - observed).square().mean()

    def constraints(self, evaluate, coords: dict, theta: dict, functions: dict) -> dict[str, Jet]:
        """Extra conditions c = 0 not enforced by `output` (e.g. a boundary or jump condition),
        as jets. BiLO adds mean(c²) to the residual loss and mean((∂θ c)²) to the
        residual-gradient loss; PINN adds mean(c²). `evaluate(points)` gives u's jet at other
        points (rows of coordinates). None by default."""
        return {}

    def collocation(self, n_res: tuple[int, ...], dtype=torch.float32, seed: int = 0
                    ) -> torch.Tensor:
        """Residual points: an evenly spaced grid over the unit box, columns in `coords` order.
        Problems with `resample_collocation` draw new points for each step's `seed`."""
        axes = [torch.linspace(0.0, 1.0, n, dtype=dtype) for n in n_res]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=1)
