"""Taylor-jet engine (bilo.jet) and the jet evaluation of the BiLO network (bilo.network).

Every derivative the jets produce is compared with nested ``torch.autograd.grad`` in float64.
"""

import math

import pytest
import torch
from fkpp_losses import BILO_KEYS as FKPP_BILO_KEYS
from fkpp_losses import bilo_jet_loss, bilo_textbook_loss

from bilo.jet import Jet, closure, faa_di_bruno_terms, leibniz_splits
from bilo.network import MLP

DT = torch.float64
# channels of the Fisher-KPP BiLO residual r = u_t - 0.01 D u_xx - rho u (1 - u) and of dr/dθ
BILO_KEYS = [*FKPP_BILO_KEYS, ("x",), ("D", "x")]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (max-norm relative error; absolute when b vanishes)."""
    a, b = torch.broadcast_tensors(a.detach(), b.detach())
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def nested_grad(f: torch.Tensor, variables: dict, key) -> torch.Tensor:
    """∂^key f by nested autograd; f and the variables are per-point (rows independent)."""
    for v in key:
        f = torch.autograd.grad(f.sum(), variables[v], create_graph=True)[0]
    return f


# --------------------------------------------------------------------------------------------
# combinatorics
# --------------------------------------------------------------------------------------------
def test_closure_and_combinatorics():
    """closure() is the sub-multiset closure; Faà di Bruno multiplicities add up to the Bell
    numbers and Leibniz coefficients to 2^|alpha| (exact integer identities)."""
    assert closure([("x", "rho", "x")]) == [
        (),
        ("rho",),
        ("x",),
        ("rho", "x"),
        ("x", "x"),
        ("rho", "x", "x"),
    ]
    assert closure(["t"]) == [(), ("t",)]
    bell = {0: 1, 1: 1, 2: 2, 3: 5, 4: 15}
    for key in [(), ("x",), ("x", "y"), ("x", "x", "y"), ("a", "b", "c"), ("x", "x", "x", "x")]:
        assert sum(m for m, _ in faa_di_bruno_terms(key)) == bell[len(key)]
        assert sum(c for _, _, c in leibniz_splits(key)) == 2 ** len(key)
    # ∂_xxD f(g) = f' g_xxD + f''(g_D g_xx + 2 g_x g_xD) + f''' g_x g_x g_D
    terms = dict((blocks, m) for m, blocks in faa_di_bruno_terms(("D", "x", "x")))
    assert terms == {
        (("D", "x", "x"),): 1,
        (("D",), ("x", "x")): 1,
        (("x",), ("D", "x")): 2,
        (("D",), ("x",), ("x",)): 1,
    }


# --------------------------------------------------------------------------------------------
# jet arithmetic
# --------------------------------------------------------------------------------------------
ALL_XY = [k for k in closure([("x", "x", "x"), ("x", "x", "y"), ("x", "y", "y"), ("y", "y", "y")])]


def _closed_form(x, y, lib):
    """A function touching every jet operation; lib maps names to Jet or torch versions."""
    sin, exp, tanh, sig, sp, log = (lib[k] for k in ("sin", "exp", "tanh", "sig", "sp", "log"))
    a = sin(x * y) * exp(0.5 * x)
    b = tanh(x).square() / (1.0 + y * y)
    c = sig(sp(x - 2.0 * y)) * 3.0 - (-y) * x
    d = log(x * x + 1.0) / 4.0 + (y + 2.0) ** 3 + 1.0 / (2.0 + x)
    e = lib["cos"](y) - x * 0.25 + (x * y + 3.0) ** 0.5
    return a + b - c + d * e


_JET_LIB = {
    "sin": Jet.sin,
    "cos": Jet.cos,
    "exp": Jet.exp,
    "tanh": Jet.tanh,
    "sig": Jet.sigmoid,
    "sp": Jet.softplus,
    "log": Jet.log,
}
_TORCH_LIB = {
    "sin": torch.sin,
    "cos": torch.cos,
    "exp": torch.exp,
    "tanh": torch.tanh,
    "sig": torch.sigmoid,
    "sp": torch.nn.functional.softplus,
    "log": torch.log,
}


def test_jet_arithmetic_matches_autograd():
    """All channels up to order 3 of a closed-form f(x, y) built from +, -, *, /, **, square,
    unary minus, sin, cos, exp, tanh, sigmoid, softplus, log (Leibniz + Faà di Bruno + chain
    of compositions) vs nested autograd in float64: relative error <= 1e-10."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(25, generator=g, dtype=DT) + 0.2).requires_grad_(True)
    y = (torch.rand(25, generator=g, dtype=DT) - 0.5).requires_grad_(True)
    fx = _closed_form(Jet.variable("x", x, ALL_XY), Jet.variable("y", y, ALL_XY), _JET_LIB)
    f = _closed_form(x, y, _TORCH_LIB)
    assert sorted(fx.keys) == sorted(ALL_XY)
    for key in ALL_XY:
        assert rel_err(fx[key], nested_grad(f, {"x": x, "y": y}, key)) <= 1e-10, key


def test_jet_d_and_getitem():
    """d(): u.d("x")[beta] is the stored channel u[x + beta] (identical tensors); a tracked
    channel that is structurally zero reads as exact zeros of the jet's shape, an untracked
    multi-index raises KeyError; unsorted keys are accepted."""
    keys = [("x", "x", "y"), ("t",)]
    x = torch.linspace(0.1, 1.0, 7, dtype=DT)
    y = torch.linspace(-1.0, 1.0, 7, dtype=DT)
    X, Y = Jet.variable("x", x, keys), Jet.variable("y", y, keys)
    f = (X * X * Y).exp()
    fx = f.d("x")
    assert set(fx.keys) == {(), ("x",), ("y",), ("x", "y")}
    assert fx[("y", "x")] is f[("x", "x", "y")]
    assert f.d("x", "y", "x").value is f[("x", "x", "y")]
    zero = f["t"]  # tracked, never touched by x, y -> structural zero
    assert zero.shape == f.shape and torch.count_nonzero(zero) == 0
    with pytest.raises(KeyError):
        f[("y", "y")]
    with pytest.raises(KeyError):
        f.d("y", "y")
    # the variable's own channel is a broadcastable 0-d one
    assert X["x"].dim() == 0 and float(X["x"]) == 1.0
    assert torch.equal(Jet.constant(torch.tensor(2.0)).value, torch.tensor(2.0))


def test_jet_composition_matches_autograd():
    """Composition d/dx of a jet-of-a-jet: h = tanh(u) with u = x^2 y + sin(y), then
    h.d("x") * y and its ("y",), ("x",) channels vs nested autograd (rel. error <= 1e-10)."""
    keys = [("x", "x", "y")]
    x = torch.linspace(0.1, 1.0, 9, dtype=DT).requires_grad_(True)
    y = torch.linspace(-1.0, 0.7, 9, dtype=DT).requires_grad_(True)
    X, Y = Jet.variable("x", x, keys), Jet.variable("y", y, keys)
    hj = (X.square() * Y + Y.sin()).tanh()
    gj = hj.d("x") * Y  # jet of y * h_x, carrying (x,), (y,), (x, y)
    h = torch.tanh(x**2 * y + torch.sin(y))
    hx = torch.autograd.grad(h.sum(), x, create_graph=True)[0]
    g = y * hx
    v = {"x": x, "y": y}
    for key in [(), ("x",), ("y",), ("x", "y")]:
        assert rel_err(gj[key], nested_grad(g, v, key)) <= 1e-10, key


# --------------------------------------------------------------------------------------------
# network jets
# --------------------------------------------------------------------------------------------
def _points(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=DT)
    t = torch.rand(n, generator=g, dtype=DT)
    return x, t


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "autograd-ops"])
@pytest.mark.parametrize("depth", [2, 3])
def test_network_jet_channels_match_nested_autograd(depth, fused):
    """Every Fisher-KPP BiLO channel of the network jet, with θ = (D, rho) shared by all points,
    vs nested autograd of the plain forward pass w.r.t. per-point copies of x, t, D, rho
    (float64, tanh, width 32, 64 random points): relative error <= 1e-10."""
    torch.manual_seed(depth)
    net = MLP(2, 2, width=32, depth=depth).to(DT)
    x, t = _points(64)
    theta = torch.tensor([1.3, 0.7], dtype=DT)
    u = net.jet(torch.stack([x, t], 1), theta, BILO_KEYS, ("x", "t"), ("D", "rho"), fused=fused)
    assert set(u.keys) == set(closure(BILO_KEYS))
    v = {
        "x": x.clone().requires_grad_(True),
        "t": t.clone().requires_grad_(True),
        "D": theta[0].expand(64).clone().requires_grad_(True),
        "rho": theta[1].expand(64).clone().requires_grad_(True),
    }
    ref = net(torch.stack([v["x"], v["t"]], 1), torch.stack([v["D"], v["rho"]], 1))
    for key in closure(BILO_KEYS):
        assert rel_err(u[key], nested_grad(ref, v, key)) <= 1e-10, key


@pytest.mark.parametrize("activation", ["sigmoid", "sin", "softplus"])
def test_network_jet_other_activations(activation):
    """Network jets with non-tanh activations (generic derivative lists), depth 2, order-3
    channels (x,x,t) and (rho,x,x) vs nested autograd: relative error <= 1e-10."""
    torch.manual_seed(3)
    net = MLP(2, 1, width=16, depth=2, activation=activation).to(DT)
    x, t = _points(20, seed=3)
    rho = torch.full((20,), 0.4, dtype=DT)
    keys = [("t", "x", "x"), ("rho", "x", "x")]
    u = net.jet(torch.stack([x, t], 1), rho[:1], keys, ("x", "t"), ("rho",))
    v = {k: val.clone().requires_grad_(True) for k, val in {"x": x, "t": t, "rho": rho}.items()}
    ref = net(torch.stack([v["x"], v["t"]], 1), v["rho"][:, None])
    for key in closure(keys):
        assert rel_err(u[key], nested_grad(ref, v, key)) <= 1e-10, key


def test_pinn_network_and_per_point_params():
    """n_params = 0 (PINN): channels (), t, x, xx vs nested autograd (rel. <= 1e-10); the
    value channel equals forward() exactly in value; θ given per point (N, n_params) gives the
    same jet as θ shared (rel. <= 1e-14)."""
    torch.manual_seed(5)
    net = MLP(2, 0, width=24, depth=2).to(DT)
    x, t = _points(30, seed=5)
    u = net.jet(torch.stack([x, t], 1), None, [("t",), ("x", "x")], ("x", "t"))
    v = {"x": x.clone().requires_grad_(True), "t": t.clone().requires_grad_(True)}
    ref = net(torch.stack([v["x"], v["t"]], 1))
    for key in [(), ("t",), ("x",), ("x", "x")]:
        assert rel_err(u[key], nested_grad(ref, v, key)) <= 1e-10, key

    net2 = MLP(2, 2, width=24, depth=3).to(DT)
    coords = torch.stack([x, t], 1)
    theta = torch.tensor([0.3, -1.1], dtype=DT)
    shared = net2.jet(coords, theta, BILO_KEYS, ("x", "t"), ("D", "rho"))
    per_point = net2.jet(coords, theta.expand(30, 2), BILO_KEYS, ("x", "t"), ("D", "rho"))
    for key in closure(BILO_KEYS):
        assert rel_err(per_point[key], shared[key]) <= 1e-14, key
    assert rel_err(shared.value, net2(coords, theta)) <= 1e-14


def test_value_only_jet_is_the_forward_pass():
    """A jet with only the value channel (keys [()]) goes through the default (fused) path and
    equals forward() with its gradients, to 1e-14 (it once failed in the fused backward)."""
    torch.manual_seed(6)
    net = MLP(1, 0, width=16, depth=2).to(DT)
    x = torch.rand(20, 1, dtype=DT)
    value = net.jet(x, None, [()], ("x",)).value
    grad = torch.autograd.grad(value.square().sum(), net.W_x)[0]
    reference = net(x)
    reference_grad = torch.autograd.grad(reference.square().sum(), net.W_x)[0]
    assert rel_err(value, reference) <= 1e-14
    assert rel_err(grad, reference_grad) <= 1e-14


def test_float32_dtype_follows_inputs():
    """float32 network and inputs: every channel is float32 and agrees with the float64
    evaluation of the same weights to float32 accuracy (rel. <= 1e-4)."""
    torch.manual_seed(7)
    net = MLP(2, 2, width=32, depth=2)
    x, t = _points(40, seed=7)
    coords = torch.stack([x, t], 1)
    theta = torch.tensor([1.0, 2.0])
    u32 = net.jet(coords.float(), theta, BILO_KEYS, ("x", "t"), ("D", "rho"))
    u64 = net.to(DT).jet(coords, theta.to(DT), BILO_KEYS, ("x", "t"), ("D", "rho"))
    for key in closure(BILO_KEYS):
        assert u32[key].dtype == torch.float32
        assert rel_err(u32[key].double(), u64[key]) <= 1e-4, key


# --------------------------------------------------------------------------------------------
# gradients of losses built from jet channels
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "autograd-ops"])
@pytest.mark.parametrize("depth", [2, 3])
def test_loss_gradients_match_nested_autograd(depth, fused, report):
    """Gradients w.r.t. every network weight and w.r.t. θ of the BiLO lower-level loss
    mean(r^2) + mean(r_D^2) + mean(r_rho^2) built from jet channels vs the same loss built with
    nested autograd (float64, width 32, 50 points): loss and gradients relative error <= 1e-9."""
    torch.manual_seed(10 + depth)
    net = MLP(2, 2, width=32, depth=depth).to(DT)
    x, t = _points(50, seed=depth)
    coords = torch.stack([x, t], 1)
    theta = torch.tensor([1.5, 0.8], dtype=DT, requires_grad=True)
    params = [theta, *net.parameters()]
    lj = bilo_jet_loss(net, coords, theta, fused)
    gj = torch.autograd.grad(lj, params)
    la = bilo_textbook_loss(net, coords, theta)
    ga = torch.autograd.grad(la, params)
    assert rel_err(lj, la) <= 1e-9
    errs = [rel_err(a, b) for a, b in zip(gj, ga, strict=True)]
    report(f"depth={depth} fused={fused}: max rel. gradient error {max(errs):.2e}")
    assert max(errs) <= 1e-9, errs


def test_coordinate_gradients_and_pinn_loss():
    """Reverse mode through the fused jet also reaches the coordinates: d/d(coords) of
    sum_k mean(channel_k^2) vs the pure-autograd-ops jet (rel. <= 1e-12), and a PINN loss
    gradient vs nested autograd (rel. <= 1e-9)."""
    torch.manual_seed(4)
    net = MLP(2, 0, width=16, depth=2).to(DT)
    x, t = _points(20, seed=4)
    grads = []
    for fused in (True, False):
        coords = torch.stack([x, t], 1).requires_grad_(True)
        u = net.jet(coords, None, [("t",), ("x", "x")], ("x", "t"), fused=fused)
        loss = sum(u[k].square().mean() for k in u.keys)
        grads.append(torch.autograd.grad(loss, [coords, *net.parameters()]))
    assert max(rel_err(a, b) for a, b in zip(*grads, strict=True)) <= 1e-12

    coords = torch.stack([x, t], 1)
    u = net.jet(coords, None, [("t",), ("x", "x")], ("x", "t"))
    lj = (u["t"] - 0.02 * u[("x", "x")] - 2.0 * u.value * (1 - u.value)).square().mean()
    v = {"x": x.clone().requires_grad_(True), "t": t.clone().requires_grad_(True)}
    uu = net(torch.stack([v["x"], v["t"]], 1))
    ra = nested_grad(uu, v, ("t",)) - 0.02 * nested_grad(uu, v, ("x", "x"))
    la = (ra - 2.0 * uu * (1 - uu)).square().mean()
    gj = torch.autograd.grad(lj, list(net.parameters()))
    ga = torch.autograd.grad(la, list(net.parameters()))
    assert max(rel_err(a, b) for a, b in zip(gj, ga, strict=True)) <= 1e-9


def test_fused_graphs_alive_together_and_retain_graph():
    """The fused jet reuses pooled CPU buffers across calls; two graphs alive at the same time
    (and a graph backpropagated twice with retain_graph) must still give exactly the gradients
    of fresh single evaluations (bitwise equal)."""
    torch.manual_seed(8)
    net = MLP(2, 2, width=16, depth=3).to(DT)
    x, t = _points(30, seed=8)
    c1 = torch.stack([x, t], 1)
    c2 = torch.stack([t, x], 1)
    theta = torch.tensor([0.5, 1.5], dtype=DT)

    def loss(coords):
        u = net.jet(coords, theta, BILO_KEYS, ("x", "t"), ("D", "rho"))
        return sum((u[k] ** 2).mean() for k in u.keys)

    params = list(net.parameters())
    ref1 = torch.autograd.grad(loss(c1), params)
    ref2 = torch.autograd.grad(loss(c2), params)
    l1, l2 = loss(c1), loss(c2)  # both graphs alive
    g2 = torch.autograd.grad(l2, params, retain_graph=True)
    g1 = torch.autograd.grad(l1, params)
    g2_again = torch.autograd.grad(l2, params)
    for a, b, c, d, e in zip(g1, ref1, g2, ref2, g2_again, strict=True):
        assert torch.equal(a, b) and torch.equal(c, d) and torch.equal(e, d)


def test_first_layer_init_and_buffer():
    """R is a non-trainable buffer; W_x, R, b lie in [-1/sqrt(d), 1/sqrt(d)], d = n_coords +
    n_params (exact bounds)."""
    net = MLP(2, 3, width=64, depth=2)
    names = {n for n, _ in net.named_parameters()}
    assert "R" not in names and "R" in dict(net.named_buffers())
    assert {"W_x", "b"} <= names
    bound = 1 / math.sqrt(5)
    for tensor in (net.W_x, net.b, net.R):
        assert tensor.abs().max() <= bound
