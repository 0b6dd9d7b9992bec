"""Inference methods as interchangeable strategies over the same problem objects.

Each method owns a network and the parameter vector θ and knows how to take one pre-training
step (θ fixed at the initial guess) and one fine-tuning step. Methods are picked by name from
`METHODS`.

* BiLO (paper Section 2): the network takes θ as input. Lower level: residual loss +
  w_rgrad·‖∂θ r‖² w.r.t. the weights W; upper level: data loss w.r.t. θ; both updated at every
  step (simultaneous gradient descent) with separate Adam optimisers.
* PINN: θ is not a network input; one loss L_res + w_dat·L_dat w.r.t. W and θ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bilo.jet import Jet, Key, as_key
from bilo.network import MLP
from bilo.problems.base import Problem


@dataclass
class Batch:
    """Tensors a step needs, on the training device."""

    collocation: torch.Tensor  # (N, n_coords)
    obs_points: torch.Tensor  # (M, n_coords)
    obs_values: torch.Tensor  # (M,)
    u0: torch.Tensor | None = None  # numerical solution at θ0 on the collocation points


class Method:
    name = ""

    def __init__(self, problem: Problem, width: int, depth: int, theta0: torch.Tensor,
                 lr_net: float, lr_theta: float):
        self.problem = problem
        self.network = self.make_network(width, depth)
        self.theta = torch.nn.Parameter(theta0.clone())
        self.net_params = [p for p in self.network.parameters() if p.requires_grad]
        self.opt_net = torch.optim.Adam(self.net_params, lr=lr_net)
        self.opt_theta = torch.optim.Adam([self.theta], lr=lr_theta)

    def make_network(self, width: int, depth: int) -> MLP:
        raise NotImplementedError

    def to(self, device: torch.device) -> Method:
        self.network.to(device)
        with torch.no_grad():
            self.theta.data = self.theta.data.to(device)
        return self

    # -- evaluation ---------------------------------------------------------------------------
    def _coords(self, points: torch.Tensor, keys) -> dict[str, Jet]:
        return {name: Jet.variable(name, points[:, i], keys)
                for i, name in enumerate(self.problem.coords)}

    def predict(self, points: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """u at points (values only), differentiable w.r.t. W and θ."""
        theta = self.theta if theta is None else theta
        coords = {name: Jet.constant(points[:, i]) for i, name in enumerate(self.problem.coords)}
        params = {name: Jet.constant(theta[j]) for j, name in enumerate(self.problem.params)}
        net = Jet.constant(self.network(points, theta if self.network.n_params else None))
        return self.problem.output(net, coords, params).value

    def data_loss(self, batch: Batch) -> torch.Tensor:
        return (self.predict(batch.obs_points) - batch.obs_values).square().mean()

    def lower_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, Jet]:
        """Unweighted loss terms, their weighted sum that trains W, and u's jet."""
        raise NotImplementedError

    def pretrain_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step on the lower-level loss with θ fixed (plus the u0 fit when given)."""
        losses, total, u = self.lower_losses(batch)
        if batch.u0 is not None:
            losses["u0"] = (u.value - batch.u0).square().mean()
            total = total + losses["u0"]
        self.opt_net.zero_grad(set_to_none=True)
        total.backward(inputs=self.net_params)
        self.opt_net.step()
        return losses

    def finetune_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "theta": self.theta.detach().cpu(),
                "opt_net": self.opt_net.state_dict(), "opt_theta": self.opt_theta.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        self.opt_net.load_state_dict(state["opt_net"])
        self.opt_theta.load_state_dict(state["opt_theta"])


class BiLO(Method):
    name = "bilo"

    def __init__(self, *args, w_rgrad: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_rgrad = w_rgrad
        residual = [as_key(k) for k in self.problem.residual_keys]
        self.keys: list[Key] = residual + [as_key((*k, p)) for k in residual
                                           for p in self.problem.params]

    def make_network(self, width, depth):
        return MLP(len(self.problem.coords), len(self.problem.params), width, depth)

    def lower_losses(self, batch):
        problem, theta = self.problem, self.theta
        net = self.network.jet(batch.collocation, theta, self.keys, problem.coords,
                               problem.params)
        params = {name: Jet.variable(name, theta[j], self.keys)
                  for j, name in enumerate(problem.params)}
        coords = self._coords(batch.collocation, self.keys)
        u = problem.output(net, coords, params)
        r = problem.residual(u, coords, params)
        losses = {"res": r.value.square().mean(),
                  "rgrad": sum(r[(name,)].square().mean() for name in problem.params)}
        return losses, losses["res"] + self.w_rgrad * losses["rgrad"], u

    def finetune_step(self, batch):
        losses, lower, _ = self.lower_losses(batch)
        losses["dat"] = self.data_loss(batch)
        self.opt_net.zero_grad(set_to_none=True)
        self.opt_theta.zero_grad(set_to_none=True)
        # Lower level: the local-operator loss moves the weights only; upper level: the data
        # loss moves θ only (the paper's simultaneous gradient descent).
        lower.backward(inputs=self.net_params)
        losses["dat"].backward(inputs=[self.theta])
        self.opt_net.step()
        self.opt_theta.step()
        return losses


class PINN(Method):
    name = "pinn"

    def __init__(self, *args, w_dat: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_dat = w_dat
        self.keys = [as_key(k) for k in self.problem.residual_keys]

    def make_network(self, width, depth):
        return MLP(len(self.problem.coords), 0, width, depth)

    def lower_losses(self, batch):
        problem = self.problem
        net = self.network.jet(batch.collocation, None, self.keys, problem.coords)
        params = {name: self.theta[j] for j, name in enumerate(problem.params)}
        coords = self._coords(batch.collocation, self.keys)
        u = problem.output(net, coords, params)
        r = problem.residual(u, coords, params)
        res = r.value.square().mean()
        return {"res": res}, res, u

    def finetune_step(self, batch):
        losses, _, _ = self.lower_losses(batch)
        losses["dat"] = self.data_loss(batch)
        self.opt_net.zero_grad(set_to_none=True)
        self.opt_theta.zero_grad(set_to_none=True)
        (losses["res"] + self.w_dat * losses["dat"]).backward()
        self.opt_net.step()
        self.opt_theta.step()
        return losses


METHODS: dict[str, type[Method]] = {m.name: m for m in (BiLO, PINN)}
