"""BiLO's upper level with the exact gradient (docs/darcy.md, "What limits the upper level"):
A = 3 + 9·sigmoid(N_A(x, y; V)), the Darcy problem's own function network, fitted to A0 as in
pre-training, then Adam on V with dJ/dA from the dolfinx adjoint (the same misfit and TV
regulariser as `bilo train darcy --method adjoint`). No network for u: what Adam on A's
weights reaches when every gradient is exact, against BiLO's answer and L-BFGS-B's on the
vertex values.

    bilo solve darcy --nx 50 --obs grid --n-obs 51 --out clean.h5
    python docs/scripts/darcy_network_adjoint.py clean.h5 --lr 1e-3 --steps 3000

Prints J, A's relative L2 error and its accuracy (thresholded at 7.5) every steps/6 steps.
"""

import argparse
import time

import numpy as np
import torch

from bilo.functions import FunctionNet
from bilo.problems.darcy import Darcy
from solvers.exchange import read_solution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a file of `bilo solve darcy`")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's rate for V (1e-3)")
    parser.add_argument("--steps", type=int, default=3000, help="upper-level steps (3000)")
    parser.add_argument("--pretrain-steps", type=int, default=3000,
                        help="steps fitting A to A0 first (3000)")
    parser.add_argument("--w-reg", type=float, default=1e-10, help="TV weight (1e-10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = read_solution(args.data)
    adjoint = Darcy().adjoint(data, w_reg={"A": args.w_reg})
    truth = np.asarray(data.inputs["A"])
    net = FunctionNet(Darcy.functions["A"])
    vertices = torch.as_tensor(data.mesh.vertices[:, :2], dtype=torch.float32)
    a0 = torch.as_tensor(adjoint.initial_guess(), dtype=torch.float32)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.pretrain_steps):
        optimiser.zero_grad()
        (net(vertices) - a0).square().mean().backward()
        optimiser.step()
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)  # fresh, as BiLO's fresh_upper
    start = time.perf_counter()
    for step in range(args.steps + 1):
        optimiser.zero_grad()
        a = net(vertices)
        values = a.detach().double().numpy()
        objective, gradient = adjoint.objective_and_gradient(values)
        # dJ/dV = (dJ/dA)·(dA/dV): the adjoint's gradient per vertex, pulled back by autograd
        (a * torch.as_tensor(gradient, dtype=a.dtype)).sum().backward()
        if step % max(args.steps // 6, 1) == 0:
            error = np.linalg.norm(values - truth) / np.linalg.norm(truth)
            accuracy = np.mean((values > 7.5) == (truth > 7.5))
            print(f"step {step}: J {objective:.3e}, A rel. L2 {error:.3f}, accuracy "
                  f"{100 * accuracy:.1f} % ({time.perf_counter() - start:.0f} s)", flush=True)
        optimiser.step()


if __name__ == "__main__":
    main()
