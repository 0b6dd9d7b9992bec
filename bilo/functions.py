"""Unknown functions and the auxiliary variable z = f(x) (paper Section 2.4).

An unknown function f(x; V) is its own small network (2 hidden layers of width 64) followed by
a transform that fixes its boundary values or sign. BiLO's local operator takes z as an extra
input, u(x, t, z; W), and solves the PDE for u(x, t, f(x)).

The residual is written for the composite ũ(x, t) = u(x, t, f(x) + ζ) with derivatives in x
that go through f, and ζ an independent variable: ∂ζ of the residual at ζ = 0 is the
derivative of the augmented residual a(x, z) with respect to its z slot (f′, f″ held fixed), the
residual-gradient term of the paper. With jets this is a change of the network's inputs: the
z-input jet is f's jet (channels (), x, xx, ...) plus the variable ζ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bilo.jet import Jet
from bilo.model import FunctionSpec
from bilo.network import MLP


def aux_name(function: str) -> str:
    """The jet variable that perturbs the auxiliary input z of `function`."""
    return f"zeta_{function}"


def _linear(jet: Jet, weight: torch.Tensor, bias: torch.Tensor | None) -> Jet:
    channels = {key: jet[key] @ weight.T for key in jet.keys}
    if bias is not None:
        channels[()] = channels[()] + bias
    return Jet(channels, jet.keys)


def mlp_jet_of_inputs(net: MLP, inputs: Sequence[Jet]) -> Jet:
    """The jet of the network output when each input column is itself a jet (per point).

    `inputs` lists jets for the coordinates followed by the parameter-like inputs (θ, z) in the
    network's order. Unlike `MLP.jet`, the first-layer directions may vary from point to point
    (z = f(x) has x-derivatives f′(x), f″(x)), so the first layer is a full jet product.
    """
    keys = sorted(set().union(*(set(j.keys) for j in inputs)), key=lambda k: (len(k), k))
    n_points = max(j.shape[0] if len(j.shape) else 1 for j in inputs)
    columns = {}
    for key in keys:
        parts = []
        for jet in inputs:
            value = jet[key] if key in jet else torch.zeros(())
            parts.append(torch.broadcast_to(value.to(net.W_x.dtype), (n_points,)))
        columns[key] = torch.stack(parts, dim=1)
    weight = torch.cat([net.W_x, net.R.to(net.W_x.dtype)], dim=1)
    activation = getattr(Jet, net.activation)
    h = activation(_linear(Jet(columns, keys), weight, net.b))
    for layer in net.hidden:
        h = activation(_linear(h, layer.weight, layer.bias))
    out = _linear(h, net.out.weight, net.out.bias)
    return Jet({key: out[key].squeeze(-1) for key in out.keys}, out.keys)


class FunctionNet(torch.nn.Module):
    """f(x; V) = transform(N(x; V), x) for one unknown function of the coordinates
    `spec.coords`. Points are rows (N, d) of those coordinates, or (N,) for a function of one."""

    def __init__(self, spec: FunctionSpec):
        super().__init__()
        self.spec = spec
        self.network = MLP(len(spec.coords), 0, spec.width, spec.depth)

    def jet(self, points: torch.Tensor, keys) -> Jet:
        """f's jet at `points`, tracking `keys` (multi-indices over the coordinates)."""
        points = points.reshape(len(points), -1)
        keys = keys or [()]
        net = self.network.jet(points, None, keys, self.spec.coords)
        return self.spec.transform(net, *(Jet.variable(name, points[:, i], keys)
                                          for i, name in enumerate(self.spec.coords)))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.jet(points, None).value

    def gradient(self, points: torch.Tensor) -> torch.Tensor:
        """∇f at `points`, (N, d): what the regulariser reads."""
        keys = [(name,) for name in self.spec.coords]
        jet = self.jet(points, keys)
        return torch.stack([jet[key] for key in keys], dim=1)
