"""Inference methods as interchangeable strategies over the same problem objects.

Each method owns a network u, the scalar parameters θ and one network per unknown function f,
and knows how to take one pre-training step (θ at the initial guess, f fitted to f0) and one
fine-tuning step. Methods are picked by name from `METHODS`.

* BiLO (paper Section 2): the network takes θ and z = f(x) as inputs. Lower level: residual
  loss + w_rgrad·‖∂θ,z r‖² w.r.t. the weights W; upper level: data loss (+ w_reg·‖f′‖²)
  w.r.t. θ and the function weights V; both updated at every step (simultaneous gradient
  descent) with separate Adam optimisers.
* PINN: θ and z are not network inputs; one loss L_res + w_dat·L_dat (+ w_reg·‖f′‖²) w.r.t.
  everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bilo.functions import FunctionNet, aux_name, mlp_jet_of_inputs
from bilo.jet import Jet, Key, as_key
from bilo.network import MLP
from bilo.problems.base import Problem


@dataclass
class Batch:
    """Tensors a step needs, on the training device."""

    collocation: torch.Tensor  # (N, n_coords)
    obs_points: torch.Tensor  # (M, n_coords)
    obs_values: torch.Tensor  # (M,)
    u0: torch.Tensor | None = None  # numerical solution at the initial guess, on collocation
    reg_x: torch.Tensor | None = None  # points in x for the function regulariser and f0 fit
    f0: dict[str, torch.Tensor] | None = None  # initial guesses of the functions at reg_x


def _spatial(points: torch.Tensor, problem: Problem) -> torch.Tensor:
    return points[:, problem.coords.index("x")]


class Method:
    name = ""
    # BiLO feeds θ and z to the network; PINN does not
    takes_parameters = False

    def __init__(self, problem: Problem, width: int, depth: int, theta0: torch.Tensor,
                 lr_net: float, lr_theta: float, constants: dict[str, float] | None = None,
                 w_reg: float | None = None):
        self.problem = problem
        # regulariser weight per unknown function: the problem's default unless overridden
        self.w_reg = {name: spec.w_reg if w_reg is None else w_reg
                      for name, spec in problem.functions.items()}
        self.constants = dict(constants or {})
        pde = problem.pde_params
        self.pde_index = [problem.params.index(p) for p in pde]
        n_inputs = len(pde) + len(problem.functions) if self.takes_parameters else 0
        self.network = MLP(len(problem.coords), n_inputs, width, depth, coord_init_scale=[
            problem.coord_init_scale.get(c, 1.0) for c in problem.coords])
        self.theta = torch.nn.Parameter(theta0.clone())
        self.function_nets = torch.nn.ModuleDict(
            {name: FunctionNet(spec) for name, spec in problem.functions.items()})
        self.net_params = [p for p in self.network.parameters() if p.requires_grad]
        self.upper_params = ([self.theta] if problem.params else []) + list(
            self.function_nets.parameters())
        self.opt_net = torch.optim.Adam(self.net_params, lr=lr_net)
        self.opt_upper = torch.optim.Adam(self.upper_params, lr=lr_theta)
        residual = [as_key(k) for k in problem.residual_keys]
        self.slots = (*pde, *(aux_name(f) for f in problem.functions))
        inf = float("inf")
        limits = [problem.bounds.get(p, (-inf, inf)) for p in problem.params]
        self.theta_lo = torch.tensor([lo for lo, _ in limits], dtype=theta0.dtype)
        self.theta_hi = torch.tensor([hi for _, hi in limits], dtype=theta0.dtype)
        self.keys: list[Key] = residual + (
            [as_key((*k, s)) for k in residual for s in self.slots]
            if self.takes_parameters else [])

    def to(self, device: torch.device) -> Method:
        self.network.to(device)
        self.function_nets.to(device)
        with torch.no_grad():
            self.theta.data = self.theta.data.to(device)
        self.theta_lo, self.theta_hi = self.theta_lo.to(device), self.theta_hi.to(device)
        return self

    def _step_upper(self) -> None:
        """One step of the upper-level optimiser, then θ projected onto the problem's bounds."""
        self.opt_upper.step()
        with torch.no_grad():
            self.theta.clamp_(self.theta_lo, self.theta_hi)

    # -- evaluation ---------------------------------------------------------------------------
    def _theta_values(self, jets: bool) -> dict:
        """θ as jet variables (BiLO's lower level) or tensors, plus the fixed constants."""
        pde = self.problem.pde_params
        values = {name: (Jet.variable(name, self.theta[j], self.keys)
                         if jets and name in pde else self.theta[j])
                  for j, name in enumerate(self.problem.params)}
        return values | self.constants

    @property
    def theta_pde(self) -> torch.Tensor:
        return self.theta[self.pde_index]

    def _function_jets(self, x: torch.Tensor, with_aux: bool) -> dict[str, Jet]:
        x_keys = [k for k in self.keys if set(k) <= {"x"}]
        jets = {}
        for name, net in self.function_nets.items():
            jet = net.jet(x, x_keys)
            if with_aux:
                zero = torch.zeros((), dtype=x.dtype, device=x.device)
                jet = jet + Jet.variable(aux_name(name), zero, self.keys)
            jets[name] = jet
        return jets

    def u_jet(self, points: torch.Tensor) -> tuple[Jet, dict, dict, dict]:
        """u's jet at points (channels `self.keys`), with the coordinate, θ and function jets."""
        problem = self.problem
        coords = {name: Jet.variable(name, points[:, i], self.keys)
                  for i, name in enumerate(problem.coords)}
        theta = self._theta_values(jets=self.takes_parameters)
        functions = (self._function_jets(_spatial(points, problem), self.takes_parameters)
                     if problem.functions else {})
        if not self.takes_parameters:
            net = self.network.jet(points, None, self.keys, problem.coords)
        elif not functions:
            net = self.network.jet(points, self.theta_pde, self.keys, problem.coords,
                                   problem.pde_params)
        else:  # z = f(x) varies along x: the first layer needs the full jet product
            inputs = [*coords.values(), *(theta[p] for p in problem.pde_params),
                      *functions.values()]
            net = mlp_jet_of_inputs(self.network, inputs)
        return problem.output(net, coords, theta, functions), coords, theta, functions

    def predict(self, points: torch.Tensor) -> torch.Tensor:
        """u at points (values only), differentiable w.r.t. every weight and θ."""
        problem = self.problem
        coords = {name: Jet.constant(points[:, i]) for i, name in enumerate(problem.coords)}
        theta = {name: Jet.constant(self.theta[j]) for j, name in enumerate(problem.params)}
        functions = {name: net(_spatial(points, problem))
                     for name, net in self.function_nets.items()}
        inputs = None
        if self.takes_parameters:
            columns = ([self.theta_pde.expand(len(points), -1)] if problem.pde_params else [])
            columns += [f[:, None] for f in functions.values()]
            inputs = torch.cat(columns, dim=1)
        net = Jet.constant(self.network(points, inputs))
        functions = {name: Jet.constant(f) for name, f in functions.items()}
        return problem.output(net, coords, theta | self.constants, functions).value

    def data_loss(self, batch: Batch) -> torch.Tensor:
        theta = dict(zip(self.problem.params, self.theta, strict=True)) | self.constants
        return self.problem.data_loss(self.predict(batch.obs_points), batch.obs_values, theta)

    def upper_objective(self, batch: Batch, losses: dict, w_dat: float = 1.0) -> torch.Tensor:
        """w_dat·L_dat + Σ_f w_reg·mean(f′²) (mean|f′| for total variation); records the
        unweighted terms in `losses` as "dat" and, with unknown functions, "reg"."""
        losses["dat"] = self.data_loss(batch)
        objective = w_dat * losses["dat"]
        if self.function_nets:
            terms = {name: net.regulariser(batch.reg_x)
                     for name, net in self.function_nets.items()}
            losses["reg"] = sum(terms.values())
            objective = objective + sum(self.w_reg[name] * term for name, term in terms.items())
        return objective

    def lower_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, Jet]:
        """Unweighted loss terms, their weighted sum that trains W, and u's jet."""
        u, coords, theta, functions = self.u_jet(batch.collocation)
        residuals = {"res": self.problem.residual(u, coords, theta, functions)}
        residuals.update(self.problem.constraints(lambda p: self.u_jet(p)[0], coords, theta,
                                                  functions))
        losses = {"res": sum(r.value.square().mean() for r in residuals.values())}
        total = losses["res"]
        if self.takes_parameters:
            losses["rgrad"] = sum(r[(slot,)].square().mean()
                                  for r in residuals.values() for slot in self.slots)
            total = total + self.w_rgrad * losses["rgrad"]
        return losses, total, u

    # -- steps --------------------------------------------------------------------------------
    def pretrain_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """θ stays at the initial guess. W: lower-level loss (+ u0 fit); V: fit f0."""
        losses, total, u = self.lower_losses(batch)
        if batch.u0 is not None:
            losses["u0"] = (u.value - batch.u0).square().mean()
            total = total + losses["u0"]
        self.opt_net.zero_grad(set_to_none=True)
        total.backward(inputs=self.net_params)
        self.opt_net.step()
        if self.function_nets:
            losses["f0"] = sum((net(batch.reg_x) - batch.f0[name]).square().mean()
                               for name, net in self.function_nets.items())
            self.opt_upper.zero_grad(set_to_none=True)
            losses["f0"].backward(inputs=list(self.function_nets.parameters()))
            self.opt_upper.step()
        return losses

    def finetune_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "theta": self.theta.detach().cpu(),
                "functions": self.function_nets.state_dict(),
                "opt_net": self.opt_net.state_dict(), "opt_upper": self.opt_upper.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.function_nets.load_state_dict(state["functions"])
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        self.opt_net.load_state_dict(state["opt_net"])
        self.opt_upper.load_state_dict(state["opt_upper"])


class BiLO(Method):
    name = "bilo"
    takes_parameters = True

    def __init__(self, *args, w_rgrad: float = 0.1, **kwargs):
        self.w_rgrad = w_rgrad
        super().__init__(*args, **kwargs)

    def finetune_step(self, batch):
        losses, lower, _ = self.lower_losses(batch)
        upper = self.upper_objective(batch, losses)
        self.opt_net.zero_grad(set_to_none=True)
        self.opt_upper.zero_grad(set_to_none=True)
        # Lower level: the local-operator loss moves the weights W only; upper level: the data
        # loss moves θ and the functions only (the paper's simultaneous gradient descent).
        lower.backward(inputs=self.net_params)
        upper.backward(inputs=self.upper_params)
        self.opt_net.step()
        self._step_upper()
        return losses


class PINN(Method):
    name = "pinn"

    def __init__(self, *args, w_dat: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_dat = w_dat

    def finetune_step(self, batch):
        losses, lower, _ = self.lower_losses(batch)
        total = lower + self.upper_objective(batch, losses, self.w_dat)
        self.opt_net.zero_grad(set_to_none=True)
        self.opt_upper.zero_grad(set_to_none=True)
        total.backward()
        self.opt_net.step()
        self._step_upper()
        return losses


METHODS: dict[str, type[Method]] = {m.name: m for m in (BiLO, PINN)}
