"""The network surrogate u(x, θ; W) of a problem, with its jets: what a method optimises and what
a sampler or an operator-learning method can reuse.

A surrogate holds the network u, the scalar parameters θ (one torch parameter) and one network
per unknown function f. `u_jet(points)` gives u with the derivative channels the residual needs
(and, with `takes_parameters`, their derivatives in θ and in the auxiliary inputs z = f(x), the
local operator's); `predict(points)` gives values only, differentiable in every weight and θ.
"""

from __future__ import annotations

import numpy as np
import torch

from bilo.functions import FunctionNet, aux_name, mlp_jet_of_inputs
from bilo.jet import Jet, Key, as_key
from bilo.model import Problem
from bilo.network import MLP


def _function_points(points: torch.Tensor, problem: Problem) -> torch.Tensor:
    """The columns of `points` that the unknown functions take: (N,) for x alone, else
    (N, d)."""
    columns = [problem.coords.index(c) for c in problem.function_coords]
    return points[:, columns[0]] if len(columns) == 1 else points[:, columns]


class Surrogate:
    def __init__(self, problem: Problem, width: int, depth: int, theta0: torch.Tensor,
                 constants: dict[str, float] | None = None, takes_parameters: bool = True):
        self.problem = problem
        self.takes_parameters = takes_parameters
        self.constants = dict(constants or {})
        pde = problem.pde_params
        self.pde_index = [problem.params.index(p) for p in pde]
        n_inputs = len(pde) + len(problem.functions) if takes_parameters else 0
        columns = (*problem.coords, *problem.features)
        self.network = MLP(len(columns), n_inputs, width, depth, coord_init_scale=[
            problem.coord_init_scale.get(c, 1.0) for c in columns])
        scale = {p.name: p.scale for p in problem.parameters}
        self.input_scale = [1.0 / scale[p] for p in pde]
        self.theta = torch.nn.Parameter(theta0.clone())
        self.function_nets = torch.nn.ModuleDict(
            {name: FunctionNet(spec) for name, spec in problem.functions.items()})
        residual = [as_key(k) for k in problem.residual_keys]
        # the jet variables BiLO differentiates the residual in: θ and one ζ per function
        self.slots = (*pde, *(aux_name(f) for f in problem.functions))
        scale |= {aux_name(f): spec.scale for f, spec in problem.functions.items()}
        self.slot_scales = {slot: scale.get(slot, 1.0) for slot in self.slots}
        self.keys: list[Key] = residual + (
            [as_key((*k, s)) for k in residual for s in self.slots] if takes_parameters else [])

    def to(self, device: torch.device) -> Surrogate:
        self.network.to(device)
        self.function_nets.to(device)
        with torch.no_grad():
            self.theta.data = self.theta.data.to(device)
        return self

    @property
    def theta_pde(self) -> torch.Tensor:
        return self.theta[self.pde_index]

    def theta_values(self, jets: bool) -> dict:
        """θ as jet variables (BiLO's lower level) or tensors, plus the fixed constants."""
        pde = self.problem.pde_params
        values = {name: (Jet.variable(name, self.theta[j], self.keys)
                         if jets and name in pde else self.theta[j])
                  for j, name in enumerate(self.problem.params)}
        return values | self.constants

    def _function_jets(self, points: torch.Tensor, with_aux: bool) -> dict[str, Jet]:
        spatial = [k for k in self.keys if set(k) <= set(self.problem.function_coords)]
        jets = {}
        for name, net in self.function_nets.items():
            jet = net.jet(points, spatial)
            if with_aux:
                zero = torch.zeros((), dtype=points.dtype, device=points.device)
                jet = jet + Jet.variable(aux_name(name), zero, self.keys)
            jets[name] = jet
        return jets

    def u_jet(self, points: torch.Tensor) -> tuple[Jet, dict, dict, dict]:
        """u's jet at points (channels `self.keys`), with the coordinate, θ and function jets."""
        problem = self.problem
        coords = {name: Jet.variable(name, points[:, i], self.keys)
                  for i, name in enumerate(problem.coords)}
        theta = self.theta_values(jets=self.takes_parameters)
        functions = (self._function_jets(_function_points(points, problem),
                                          self.takes_parameters)
                     if problem.functions else {})
        features = problem.network_features(coords, theta)
        scaled = any(s != 1.0 for s in self.input_scale)
        if not (functions or features or (scaled and self.takes_parameters)):
            net = (self.network.jet(points, self.theta_pde, self.keys, problem.coords,
                                    problem.pde_params) if self.takes_parameters else
                   self.network.jet(points, None, self.keys, problem.coords))
        else:  # features, functions of x or scaled θ: the first layer as a full jet product
            inputs = [*coords.values(), *(features[f] for f in problem.features)]
            if self.takes_parameters:
                inputs += [theta[p] * s for p, s in zip(problem.pde_params, self.input_scale,
                                                        strict=True)]
                inputs += [jet * (1.0 / problem.functions[name].scale)
                           for name, jet in functions.items()]
            net = mlp_jet_of_inputs(self.network, inputs)
        return problem.output(net, coords, theta, functions), coords, theta, functions

    def predict(self, points: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """u at points (values only), differentiable w.r.t. every weight and θ; at `theta`
        instead of the surrogate's own θ if given: a vector over the problem's parameters, or
        one row per point (n, p)."""
        problem = self.problem
        theta_all = self.theta if theta is None else theta
        coords = {name: Jet.constant(points[:, i]) for i, name in enumerate(problem.coords)}
        theta = {name: Jet.constant(theta_all[..., j]) for j, name in enumerate(problem.params)}
        functions = {name: net(_function_points(points, problem))
                     for name, net in self.function_nets.items()}
        inputs = None
        if self.takes_parameters:
            scale = torch.tensor(self.input_scale, dtype=points.dtype, device=points.device)
            columns = ([(theta_all[..., self.pde_index] * scale).expand(len(points), -1)]
                       if problem.pde_params else [])
            columns += [f[:, None] / problem.functions[name].scale
                        for name, f in functions.items()]
            inputs = torch.cat(columns, dim=1)
        if problem.features:
            values = problem.network_features(coords, theta | self.constants)
            points = torch.cat([points, *(values[f].value[:, None] for f in problem.features)],
                               dim=1)
        net = Jet.constant(self.network(points, inputs))
        functions = {name: Jet.constant(f) for name, f in functions.items()}
        return problem.output(net, coords, theta | self.constants, functions).value

    def predict_numpy(self, points: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """u at numpy points (n, len(coords)) as float64, without gradients."""
        device = self.theta.device
        tensor = torch.as_tensor(np.asarray(points), dtype=self.theta.dtype, device=device)
        with torch.no_grad():
            u = torch.cat([self.predict(part) for part in tensor.split(chunk)])
        return u.cpu().numpy().astype(np.float64)

    def params(self) -> dict[str, float]:
        return dict(zip(self.problem.params, self.theta.detach().cpu().tolist(), strict=True))

    def functions_on(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """The unknown functions at numpy points ((k,) in x, or rows (k, d)), as float64."""
        x_t = torch.as_tensor(points, dtype=self.theta.dtype, device=self.theta.device)
        with torch.no_grad():
            return {name: net(x_t).cpu().numpy().astype(np.float64)
                    for name, net in self.function_nets.items()}

    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "theta": self.theta.detach().cpu(),
                "functions": self.function_nets.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.function_nets.load_state_dict(state["functions"])
        with torch.no_grad():
            self.theta.copy_(state["theta"])
