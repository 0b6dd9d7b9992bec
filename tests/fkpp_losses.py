"""The Fisher-KPP lower-level losses of BiLO and PINN written with the jet engine and the
textbook way: nested reverse-mode autograd, per coordinate or batched over (x, t). The textbook
forms are the independent reference the jet engine is tested against (tests/test_jet.py) and
timed against (bench/step_cost.py). Test and benchmark scaffolding, not part of the `bilo`
package: tests import it as `fkpp_losses` (pytest puts tests/ on sys.path), the benchmark as
`tests.fkpp_losses` (it puts the project root on sys.path).

Residual r = u_t − 0.01·D·u_xx − ρ·u(1 − u) on a network u(x, t[, D, ρ]); BiLO's loss is
mean(r²) + mean((∂D r)²) + mean((∂ρ r)²), PINN's mean(r²).
"""

from __future__ import annotations

import torch

from bilo.jet import Jet
from bilo.network import MLP

# channels the BiLO residual and its θ-derivatives read
BILO_KEYS = [(), ("t",), ("x", "x"),
             ("D",), ("D", "t"), ("D", "x", "x"),
             ("rho",), ("rho", "t"), ("rho", "x", "x")]
PINN_KEYS = [(), ("t",), ("x", "x")]
COORDS, PARAMS = ("x", "t"), ("D", "rho")


def pinn_jet_loss(net: MLP, coords: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    u = net.jet(coords, None, PINN_KEYS, COORDS)
    r = u.d("t") - 0.01 * theta[0] * u.d("x", "x") - theta[1] * u.value * (1 - u.value)
    return r.value.square().mean()


def bilo_jet_loss(net: MLP, coords: torch.Tensor, theta: torch.Tensor,
                  fused: bool = True) -> torch.Tensor:
    u = net.jet(coords, theta, BILO_KEYS, COORDS, PARAMS, fused=fused)
    theta_keys = [(p,) for p in PARAMS]
    d, rho = (Jet.variable(p, theta[j], theta_keys) for j, p in enumerate(PARAMS))
    # the reaction term needs only u's value and θ-channels: products of the full jet would
    # also build its unused t- and x-channels
    u_theta = u.truncate(theta_keys)
    r = u.d("t") - 0.01 * d * u.d("x", "x") - rho * u_theta * (1 - u_theta)
    return r.value.square().mean() + r["D"].square().mean() + r["rho"].square().mean()


def _grad(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)[0]


def _coordinates(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = coords[:, :1].detach().clone().requires_grad_(True)
    t = coords[:, 1:].detach().clone().requires_grad_(True)
    return x, t


def pinn_textbook_loss(net: MLP, coords: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    x, t = _coordinates(coords)
    u = net(torch.cat([x, t], 1)).unsqueeze(1)
    u_x = _grad(u, x)
    r = _grad(u, t) - 0.01 * theta[0] * _grad(u_x, x) - theta[1] * u * (1 - u)
    return r.square().mean()


def bilo_textbook_loss(net: MLP, coords: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """θ enters as a per-point view, so ∂θ r is one more autograd call per parameter; when θ
    requires grad, the loss's gradient also flows to θ."""
    x, t = _coordinates(coords)
    p = theta.expand(coords.shape[0], len(PARAMS))
    if not p.requires_grad:
        p = p.detach().clone().requires_grad_(True)
    u = net(torch.cat([x, t], 1), p).unsqueeze(1)
    u_x = _grad(u, x)
    d, rho = p[:, :1], p[:, 1:]
    r = _grad(u, t) - 0.01 * d * _grad(u_x, x) - rho * u * (1 - u)
    r_p = _grad(r, p)
    return r.square().mean() + r_p[:, 0].square().mean() + r_p[:, 1].square().mean()


def pinn_batched_loss(net: MLP, coords: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    x = coords.detach().clone().requires_grad_(True)
    u = net(x)
    gu = _grad(u, x)
    u_x, u_t = gu[:, 0], gu[:, 1]
    u_xx = _grad(u_x, x)[:, 0]
    r = u_t - 0.01 * theta[0] * u_xx - theta[1] * u * (1 - u)
    return r.square().mean()


def bilo_batched_loss(net: MLP, coords: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    x = coords.detach().clone().requires_grad_(True)
    p = theta.detach().expand(x.shape[0], 2).clone().requires_grad_(True)
    u = net(x, p)
    gu = _grad(u, x)
    u_x, u_t = gu[:, 0], gu[:, 1]
    u_xx = _grad(u_x, x)[:, 0]
    r = u_t - 0.01 * p[:, 0] * u_xx - p[:, 1] * u * (1 - u)
    r_theta = _grad(r, p)
    return r.square().mean() + r_theta[:, 0].square().mean() + r_theta[:, 1].square().mean()
