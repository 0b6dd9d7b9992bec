"""Low-rank fine-tuning (bilo/lora.py) on the network that BiLO trains."""

import torch

from bilo.lora import add_low_rank, merge_low_rank
from bilo.network import MLP

KEYS = [("t",), ("x", "x"), ("D",), ("D", "t"), ("D", "x", "x")]


def _net():
    torch.manual_seed(0)
    return MLP(2, 1, width=32, depth=3).double()


def _jet(net, points, theta):
    jet = net.jet(points, theta, KEYS, ("x", "t"), ("D",))
    return torch.stack([jet[k] for k in [(), *KEYS]])


def test_low_rank_increments_are_the_only_change_and_the_jet_sees_them():
    """MLP 2×(x, t) + 1 parameter, width 32, 2 hidden-to-hidden layers, rank 4: the
    increments add 2·(4·32 + 32·4) = 512 trainable numbers, and the O(width) parameters train
    (W_x 64, b 32, hidden biases 64, output layer 33: 193), the two 32 × 32 hidden weight
    matrices (2048 numbers) do not; before training the jet (u and 5 derivative channels) is
    unchanged to the bit; after three Adam steps on a loss of the jet, the hidden weight
    matrices W0 are unchanged, the jet differs, and it equals the jet of the merged network
    (W0 + B·A as plain weights) to 1e-12."""
    net = _net()
    points = torch.rand(50, 2, dtype=torch.float64)
    theta = torch.tensor([1.3], dtype=torch.float64)
    before = _jet(net, points, theta)
    frozen = {k: v.clone() for k, v in net.state_dict().items()}
    trainable = add_low_rank(net, rank=4)
    assert sum(p.numel() for p in trainable) == 512 + 193
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 512 + 193
    assert torch.equal(_jet(net, points, theta), before)
    optimiser = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(3):
        optimiser.zero_grad()
        _jet(net, points, theta).square().mean().backward()
        optimiser.step()
    tuned = _jet(net, points, theta).detach()
    assert not torch.allclose(tuned, before)
    originals = {k.replace(".parametrizations.weight.original", ".weight"): v
                 for k, v in net.state_dict().items() if not k.endswith((".A", ".B"))}
    for key, value in frozen.items():
        if key.startswith("hidden.") and key.endswith(".weight"):
            assert torch.equal(originals[key], value), key
    merge_low_rank(net)
    assert torch.allclose(_jet(net, points, theta), tuned, rtol=0, atol=1e-12)
    assert all(p.requires_grad for p in net.parameters())
