"""Low-rank fine-tuning (LoRA) of a network's hidden layers.

`add_low_rank(net, rank)` freezes the width × width weight matrices of an `MLP`'s hidden layers
(the parameters that cost: width² each) and re-expresses each as W0 + B·A, with A (rank ×
width) and B (width × rank) trainable; B starts at zero, so the network is unchanged until it is
trained. The O(width) parameters — the first layer's coordinate weights and bias, the hidden
biases and the output layer — stay trainable: with them frozen too, a depth-2 network could
move only one rank-r increment, which did not follow `poisson_constant`'s posterior (the chains
lost its low-D side). The increment is a
`torch.nn.utils.parametrize` parametrisation: `layer.weight` *is* W0 + B·A wherever it is read,
so the jet engine and the plain forward pass see the effective weights through their one code
path. `merge_low_rank(net)` folds the increments into plain weights again.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from bilo.network import MLP


class LowRankIncrement(nn.Module):
    """W ↦ W + B·A."""

    def __init__(self, rows: int, columns: int, rank: int, generator=None):
        super().__init__()
        bound = 1.0 / math.sqrt(columns)
        self.A = nn.Parameter(torch.empty(rank, columns).uniform_(-bound, bound,
                                                                    generator=generator))
        self.B = nn.Parameter(torch.zeros(rows, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.B @ self.A


def add_low_rank(net: MLP, rank: int, generator=None) -> list[nn.Parameter]:
    """Freeze the hidden layers' weight matrices of `net` and give each a trainable
    rank-`rank` increment; returns what the fine-tuning optimiser updates: the increments and
    the network's O(width) parameters (first-layer coordinate weights and bias, hidden biases,
    output layer)."""
    if rank < 1 or not net.hidden:
        raise ValueError(f"low-rank fine-tuning needs rank >= 1 and a hidden layer (rank {rank}, "
                         f"depth {net.depth})")
    trainable = [net.W_x, net.b, net.out.weight, net.out.bias]
    for layer in net.hidden:
        layer.weight.requires_grad_(False)
        rows, columns = layer.weight.shape
        increment = LowRankIncrement(rows, columns, rank, generator).to(layer.weight)
        parametrize.register_parametrization(layer, "weight", increment)
        trainable += [layer.bias, increment.A, increment.B]
    return trainable


def merge_low_rank(net: MLP) -> None:
    """Fold each increment into its layer's weight (plain, trainable weights again)."""
    for layer in net.hidden:
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    for p in net.parameters():
        p.requires_grad_(True)
