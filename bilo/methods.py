"""The network methods' optimisation steps, over the surrogate u(x, θ) of `bilo.surrogate`.

Each method owns a surrogate (the network u, θ and one network per unknown function f) and
its optimisers, and knows how to take one pre-training step (θ at the initial guess, f fitted to
f0) and one fine-tuning step.

* BiLO (paper Section 2): the network takes θ and z = f(x) as inputs. Lower level: residual
  loss + w_rgrad·‖∂θ,z r‖² w.r.t. the weights W; upper level: the objective J (the likelihood's
  misfit + w_reg·R(f)) w.r.t. θ and the function weights V; both updated at every step
  (simultaneous gradient descent) with separate Adam optimisers.
* PINN: θ and z are not network inputs; one loss L_res + w_dat·misfit (+ w_reg·R(f)) w.r.t.
  everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bilo.model import Problem
from bilo.surrogate import Surrogate


@dataclass
class Batch:
    """Tensors a step needs, on the training device."""

    collocation: torch.Tensor  # (N, n_coords)
    obs_points: torch.Tensor  # (M, n_coords)
    obs_values: torch.Tensor  # (M,)
    u0: torch.Tensor | None = None  # numerical solution at the initial guess, on collocation
    reg_x: torch.Tensor | None = None  # points (x, or rows of coordinates) for R(f) and f0 fit
    f0: dict[str, torch.Tensor] | None = None  # initial guesses of the functions at reg_x
    # (θ_a, solution at θ_a on collocation) per anchor (`bilo.train.Anchor`)
    anchors: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # ∂u/∂θ_p at θ0 on collocation, per PDE parameter p given (`NetworkOptions.tangents`)
    tangents: dict[str, torch.Tensor] = field(default_factory=dict)


# causal training cuts the residual points' times into this many equal slabs
CAUSAL_SLABS = 16


def causal_weights(t: torch.Tensor, squared: torch.Tensor, eps: float,
                   slabs: int = CAUSAL_SLABS) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal training's weight of each residual point (Wang, Sankaran & Perdikaris 2022,
    "Respecting causality"): exp(−eps·Σ_k mean r²(slab k)) over the time slabs before the
    point's, `slabs` equal slabs over the batch's times t; `squared` holds r² per point. A time
    counts once the earlier ones are fitted: where the PDE amplifies an early error, fitting
    later times first fits the amplified error. Also the last slab's weight (whether the
    latest times are trained yet). No gradient flows through the weights."""
    t, squared = t.detach(), squared.detach()
    lo, span = t.min(), t.max() - t.min()
    slab = ((t - lo) / span.clamp(min=torch.finfo(t.dtype).tiny) * slabs).long()
    slab = slab.clamp(0, slabs - 1)
    total = squared.new_zeros(slabs).index_add_(0, slab, squared)
    count = squared.new_zeros(slabs).index_add_(0, slab, torch.ones_like(squared))
    mean = total / count.clamp(min=1.0)
    weights = (-eps * (mean.cumsum(0) - mean)).exp()
    return weights[slab], weights[-1]


class Method:
    name = ""
    # BiLO feeds θ and z to the network; PINN does not
    takes_parameters = False

    def __init__(self, problem: Problem, width: int, depth: int, theta0: torch.Tensor,
                 lr_net: float, lr_theta: float, constants: dict[str, float] | None = None,
                 w_reg: float | None = None, causal: float | None = None):
        self.problem = problem
        self.causal = causal  # `bilo.model.Settings.causal`
        self.surrogate = Surrogate(problem, width, depth, theta0, constants,
                                   takes_parameters=self.takes_parameters)
        # regulariser weight per unknown function: the problem's default unless overridden
        self.w_reg = {name: spec.w_reg if w_reg is None else w_reg
                      for name, spec in problem.functions.items()}
        surrogate = self.surrogate
        self.net_params = [p for p in surrogate.network.parameters() if p.requires_grad]
        self.upper_params = ([surrogate.theta] if problem.params else []) + list(
            surrogate.function_nets.parameters())
        self.opt_net = torch.optim.Adam(self.net_params, lr=lr_net)
        self.opt_upper = torch.optim.Adam(self.upper_params, lr=lr_theta)
        inf = float("inf")
        limits = [problem.bounds.get(p, (-inf, inf)) for p in problem.params]
        self.theta_lo = torch.tensor([lo for lo, _ in limits], dtype=theta0.dtype)
        self.theta_hi = torch.tensor([hi for _, hi in limits], dtype=theta0.dtype)
        scales = [p.scale for p in problem.parameters]
        self.theta_scale = (torch.tensor(scales, dtype=theta0.dtype)
                            if any(s != 1.0 for s in scales) else None)

    @property
    def theta(self) -> torch.nn.Parameter:
        return self.surrogate.theta

    def to(self, device: torch.device) -> Method:
        self.surrogate.to(device)
        self.theta_lo, self.theta_hi = self.theta_lo.to(device), self.theta_hi.to(device)
        if self.theta_scale is not None:
            self.theta_scale = self.theta_scale.to(device)
        return self

    def _step_upper(self) -> None:
        """One step of the upper-level optimiser, then θ projected onto the problem's bounds.
        Adam's step does not depend on the gradient's scale, so stretching θ's step by the
        parameters' `scale` is Adam on θ/scale (`bilo.model.Parameter`)."""
        before = self.theta.detach().clone() if self.theta_scale is not None else None
        self.opt_upper.step()
        with torch.no_grad():
            if before is not None:
                self.theta.copy_(before + (self.theta - before) * self.theta_scale)
            self.theta.clamp_(self.theta_lo, self.theta_hi)

    def reset_upper(self) -> None:
        """A fresh upper-level Adam, at the same learning rate (`Settings.fresh_upper`)."""
        self.opt_upper = torch.optim.Adam(self.upper_params, lr=self.opt_upper.defaults["lr"])

    def data_loss(self, batch: Batch) -> torch.Tensor:
        """The likelihood's misfit of the surrogate at the observation points."""
        surrogate = self.surrogate
        theta = dict(zip(self.problem.params, surrogate.theta, strict=True)) \
            | surrogate.constants
        return self.problem.likelihood.value(surrogate.predict(batch.obs_points),
                                             batch.obs_values, theta)

    def upper_objective(self, batch: Batch, losses: dict, w_dat: float = 1.0) -> torch.Tensor:
        """w_dat·misfit + Σ_f w_reg·R(f) (`bilo.model`: R estimated on the regulariser
        points); records the unweighted terms in `losses` as "dat" and, with unknown
        functions, "reg"."""
        losses["dat"] = self.data_loss(batch)
        objective = w_dat * losses["dat"]
        nets = self.surrogate.function_nets
        if nets:
            terms = {name: self.problem.functions[name].regulariser.of_slopes(
                net.gradient(batch.reg_x)) for name, net in nets.items()}
            losses["reg"] = sum(terms.values())
            objective = objective + sum(self.w_reg[name] * term for name, term in terms.items())
        return objective

    def lower_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
        """Unweighted loss terms (with `causal`, also the weight of the latest times), their
        weighted sum that trains W, and u's jet."""
        surrogate = self.surrogate
        u, coords, theta, functions = surrogate.u_jet(batch.collocation)
        residuals = {"res": self.problem.residual(u, coords, theta, functions)}
        if self.causal is not None:
            weights, last_weight = causal_weights(
                coords["t"].value, residuals["res"].value.square(), self.causal)
            residuals["res"] = residuals["res"] * weights.sqrt()
        residuals.update(self.problem.constraints(lambda p: surrogate.u_jet(p)[0], coords,
                                                  theta, functions))
        losses = {"res": sum(r.value.square().mean() for r in residuals.values())}
        total = losses["res"]
        if self.takes_parameters:
            # derivatives per typical change of each parameter (`Parameter.scale`)
            losses["rgrad"] = sum((r[(slot,)] * scale).square().mean()
                                  for r in residuals.values()
                                  for slot, scale in surrogate.slot_scales.items())
            total = total + self.w_rgrad * losses["rgrad"]
        if self.causal is not None:
            losses["causal"] = last_weight
        return losses, total, u

    # -- steps --------------------------------------------------------------------------------
    def pretrain_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """θ stays at the initial guess. W: lower-level loss (+ u0 fit, + the anchors' fits at
        their θ); V: fit f0."""
        losses, total, u = self.lower_losses(batch)
        if batch.u0 is not None:
            losses["u0"] = (u.value - batch.u0).square().mean()
            total = total + losses["u0"]
        if batch.anchors:  # one pass over every anchor's copy of the residual points
            n = len(batch.collocation)
            thetas = torch.cat([theta.expand(n, -1) for theta, _ in batch.anchors])
            values = torch.cat([values for _, values in batch.anchors])
            predicted = self.surrogate.predict(batch.collocation.repeat(len(batch.anchors), 1),
                                               thetas)
            losses["anchors"] = (predicted - values).square().mean()
            total = total + losses["anchors"]
        if batch.tangents:  # u's jet holds ∂u/∂θ_p (BiLO differentiates in θ)
            scales = self.surrogate.slot_scales
            losses["tangents"] = sum(((u[(name,)] - values) * scales[name]).square().mean()
                                     for name, values in batch.tangents.items())
            total = total + losses["tangents"]
        self.opt_net.zero_grad(set_to_none=True)
        total.backward(inputs=self.net_params)
        self.opt_net.step()
        nets = self.surrogate.function_nets
        if nets:
            losses["f0"] = sum((net(batch.reg_x) - batch.f0[name]).square().mean()
                               for name, net in nets.items())
            self.opt_upper.zero_grad(set_to_none=True)
            losses["f0"].backward(inputs=list(nets.parameters()))
            self.opt_upper.step()
        return losses

    def finetune_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    settles = False  # whether the method has a `settle_step` (`Settings.settle_steps`)

    def state_dict(self) -> dict:
        return {**self.surrogate.state_dict(), "opt_net": self.opt_net.state_dict(),
                "opt_upper": self.opt_upper.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.surrogate.load_state_dict(state)
        self.opt_net.load_state_dict(state["opt_net"])
        self.opt_upper.load_state_dict(state["opt_upper"])


class BiLO(Method):
    name = "bilo"
    takes_parameters = True

    def __init__(self, *args, w_rgrad: float = 0.1, hold_upper: float | None = None, **kwargs):
        self.w_rgrad = w_rgrad
        self.hold_upper = hold_upper  # `bilo.model.Settings.hold_upper`
        self.res_reference: float | None = None  # residual loss at the first fine-tuning step
        super().__init__(*args, **kwargs)

    def _holds(self, losses: dict) -> bool:
        """Whether θ waits this step (`hold_upper`); records it in `losses["held"]`."""
        if self.hold_upper is None:
            return False
        res = float(losses["res"].detach())
        if self.res_reference is None:
            self.res_reference = res
        held = res > self.hold_upper * self.res_reference
        losses["held"] = torch.tensor(float(held))
        return held

    def finetune_step(self, batch):
        # Lower level: the local-operator loss moves the weights W only; upper level: the data
        # loss moves θ and the functions only (the paper's simultaneous gradient descent: both
        # gradients at the same W and θ, then both steps). The two losses share no graph but
        # the leaves, and one backward pass of their sum would mix the levels (the misfit's
        # gradient in W, the residual's in θ): two passes, the lower one before the upper
        # graph is built, so that a step holds the larger of the two graphs, not both.
        self.opt_net.zero_grad(set_to_none=True)
        self.opt_upper.zero_grad(set_to_none=True)
        losses, lower, _ = self.lower_losses(batch)
        lower.backward(inputs=self.net_params)
        held = self._holds(losses)
        objective = self.upper_objective(batch, losses)
        if not held:
            objective.backward(inputs=self.upper_params)
        self.opt_net.step()
        if not held:
            self._step_upper()
        return losses

    settles = True

    def settle_step(self, batch):
        """W on the residual loss alone at the final θ and functions. θ no longer moves, so
        ∂θ r is of no more use, and its term would keep u off the solution (darcy: 1.4 % from
        the FEM with it, 0.1 % without; docs/darcy.md)."""
        self.opt_net.zero_grad(set_to_none=True)
        losses, _, _ = self.lower_losses(batch)
        losses["res"].backward(inputs=self.net_params)
        self.opt_net.step()
        with torch.no_grad():  # the misfit of the settling u, for the record
            losses["dat"] = self.data_loss(batch)
        return losses

    def state_dict(self) -> dict:
        return {**super().state_dict(), "res_reference": self.res_reference}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "res_reference"})
        self.res_reference = state.get("res_reference")


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
