"""Benchmark: Taylor-jet engine vs nested autograd for Fisher-KPP PINN / BiLO training steps.

Problem: Fisher-KPP residual ``r = u_t - 0.01 D u_xx - rho u (1 - u)`` on a 51 x 51 grid of
``(x, t) in [0, 1]^2`` (2601 collocation points), network width 128 with 2 hidden tanh layers
(``bilo.network.MLP``), float32.  One *training step* = loss (forward) + backward + Adam step on
the network weights.  PINN loss: ``mean(r^2)`` (network of (x, t) only).  BiLO loss:
``mean(r^2) + mean(r_D^2) + mean(r_rho^2)`` (network of (x, t, D, rho); ``r_D = dr/dD`` per
point, counting both the explicit D of the PDE and the network input D).

Variants
  (a) PINN jet          ``MLP.jet``: channels (), t, x, xx in one forward-mode pass
  (b) BiLO jet          ``MLP.jet``: the 12 channels of r, r_D, r_rho in one pass
  (c) PINN textbook     nested ``torch.autograd.grad(create_graph=True)``, one call per
                        derivative: u_t, u_x w.r.t. separate leaf tensors t, x, then u_xx
  (d) BiLO textbook     as (c), then one more ``autograd.grad`` of r per θ_j w.r.t. per-point
                        copies of D and rho
  (e) PINN nested-batch nested autograd with fewer, batched calls: one call for (u_x, u_t)
                        w.r.t. the whole coordinate tensor, one for u_xx
  (f) BiLO nested-batch as (e), then one call for (r_D, r_rho) w.r.t. the per-point θ tensor

Time: seconds per training step with torch's default number of threads.  On the CPU every
variant lives in its own Python process (so that the state of the C allocator left by one
variant cannot help or hurt another); after ``--warmup`` untimed steps each, the processes take
``--steps`` timed steps strictly one at a time, round robin (so that a fluctuating machine load
affects all variants alike), with a short pause between steps so that the idle threads of the
previous worker are asleep.  Reported: the median and the minimum over the timed steps.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one step above the memory allocated
before it.  On the CPU there is no per-step allocator peak to read, so we report the *autograd
graph memory*: the total bytes of the distinct tensor storages that autograd saves for the
backward pass while the loss is built, recorded with ``torch.autograd.graph.saved_tensors_hooks``
(each saved tensor is kept referenced until the loss is complete, so no storage can be reused
and counted twice).  That is what a step holds at its peak (just before backward) beyond the
weights, the optimiser state and transient temporaries; it includes the saved tensors of custom
autograd Functions and of the double-backward graphs built by ``create_graph=True``.

Usage: ``python bench/step_cost.py [--steps 60] [--warmup 3] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch

if __package__ in (None, ""):  # run as a script from anywhere: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilo.fkpp_losses import (  # noqa: E402
    bilo_batched_loss,
    bilo_jet_loss,
    bilo_textbook_loss,
    pinn_batched_loss,
    pinn_jet_loss,
    pinn_textbook_loss,
)
from bilo.network import MLP  # noqa: E402

D_TRUE, RHO_TRUE = 1.0, 2.0


def grid(n: int, dtype, device) -> torch.Tensor:
    s = torch.linspace(0.0, 1.0, n, dtype=dtype, device=device)
    xx, tt = torch.meshgrid(s, s, indexing="ij")
    return torch.stack([xx.reshape(-1), tt.reshape(-1)], 1)


VARIANTS = {
    "a": ("(a) PINN jet", pinn_jet_loss, 0),
    "b": ("(b) BiLO jet", bilo_jet_loss, 2),
    "c": ("(c) PINN textbook", pinn_textbook_loss, 0),
    "d": ("(d) BiLO textbook", bilo_textbook_loss, 2),
    "e": ("(e) PINN nested-batch", pinn_batched_loss, 0),
    "f": ("(f) BiLO nested-batch", bilo_batched_loss, 2),
}


# --- measurement ---------------------------------------------------------------------------------
class SavedTensorBytes:
    """Context manager: total bytes of distinct storages saved for backward inside it."""

    def __init__(self):
        self.storages: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []

    def _pack(self, t: torch.Tensor):
        st = t.untyped_storage()
        self.storages.setdefault(st.data_ptr(), st.nbytes())
        self._keep.append(t)
        return t

    @staticmethod
    def _unpack(t):
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        self._keep.clear()

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


class Variant:
    """One network + optimiser + loss; ``step()`` is one training step."""

    def __init__(self, key: str, coords, theta, seed: int = 0):
        self.name, self.loss_fn, n_params = VARIANTS[key]
        torch.manual_seed(seed)
        net = MLP(2, n_params, width=128, depth=2)
        self.net = net.to(device=coords.device, dtype=coords.dtype)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.coords, self.theta = coords, theta
        self.cuda = coords.device.type == "cuda"
        self.times: list[float] = []

    def step(self, meter=None) -> float:
        self.opt.zero_grad(set_to_none=True)
        with meter if meter is not None else contextlib.nullcontext():
            loss = self.loss_fn(self.net, self.coords, self.theta)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def timed_step(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.step()
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - t0)

    def memory(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            self.step()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        meter = SavedTensorBytes()
        self.step(meter)
        return meter.nbytes


def setup(args):
    dev = torch.device(args.device)
    coords = grid(args.points, torch.float32, dev)
    theta = torch.tensor([D_TRUE, RHO_TRUE], dtype=torch.float32, device=dev)
    return coords, theta


def run_in_process(keys, args) -> dict:
    """All variants in this process, stepped round robin."""
    coords, theta = setup(args)
    runs = {k: Variant(k, coords, theta) for k in keys}
    for v in runs.values():
        for _ in range(args.warmup):
            v.step()
    for _ in range(args.steps):
        for v in runs.values():
            v.timed_step()
    out = {}
    for k, v in runs.items():
        out[k] = {"times": v.times, "memory": v.memory(), "loss": v.step()}
    return out


def serve(key: str, args) -> None:
    """Worker process: one variant; steps on request ("step"), then "memory", then "quit"."""
    coords, theta = setup(args)
    v = Variant(key, coords, theta)
    for _ in range(args.warmup):
        v.step()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            v.timed_step()
            print(v.times[-1], flush=True)
        elif cmd == "memory":
            print(json.dumps({"memory": v.memory(), "loss": v.step()}), flush=True)
        else:
            break


def run_in_subprocesses(keys, args) -> dict:
    """One worker process per variant, all alive at once but stepping strictly one at a time,
    round robin: separate allocator states, and load fluctuations hit all variants alike."""
    cmd = [sys.executable, os.path.abspath(__file__), "--warmup", str(args.warmup)]
    cmd += ["--points", str(args.points), "--device", args.device, "--threads", str(args.threads)]
    procs = {}
    for k in keys:  # start (and warm up) one after the other
        procs[k] = subprocess.Popen(
            cmd + ["--serve", k], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if procs[k].stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {k} failed to start")
    out = {k: {"times": []} for k in keys}
    try:
        for _ in range(args.steps):
            for k, proc in procs.items():
                time.sleep(args.pause)  # let the previous worker's idle threads go to sleep
                proc.stdin.write("step\n")
                proc.stdin.flush()
                out[k]["times"].append(float(proc.stdout.readline()))
        for k, proc in procs.items():
            proc.stdin.write("memory\n")
            proc.stdin.flush()
            out[k].update(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs.values():
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--points", type=int, default=51, help="grid points per dimension")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--pause", type=float, default=0.02, help="seconds between two steps")
    ap.add_argument("--variants", default="abcdef")
    ap.add_argument("--in-process", action="store_true", help="no subprocesses (default on GPUs)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.serve:
        serve(args.serve, args)
        return None
    keys = [k for k in args.variants if k in VARIANTS]
    in_process = args.in_process or torch.device(args.device).type != "cpu"
    res = run_in_process(keys, args) if in_process else run_in_subprocesses(keys, args)

    dev = torch.device(args.device)
    mem_label = "peak MiB" if dev.type == "cuda" else "graph MiB"
    print(
        f"device={dev} threads={torch.get_num_threads()} points={args.points**2} width=128 "
        f"hidden=2 float32; {args.steps} timed steps per variant, round robin"
        + (" in one process" if in_process else ", one process per variant")
    )
    print(f"{'variant':<24} {'median s':>9} {'min s':>9} {mem_label:>10} {'loss':>11}")
    med = {}
    for k in keys:
        r = res[k]
        med[k] = statistics.median(r["times"])
        print(
            f"{VARIANTS[k][0]:<24} {med[k]:9.4f} {min(r['times']):9.4f} "
            f"{r['memory'] / 2**20:10.1f} {r['loss']:11.4e}"
        )

    def ratio(label, num, den):
        if num in res and den in res:
            t = med[num] / med[den]
            m = res[num]["memory"] / res[den]["memory"]
            print(f"{label:<34} time {t:5.2f}x   memory {m:5.2f}x")

    ratio("BiLO jet / PINN jet", "b", "a")
    ratio("BiLO textbook / BiLO jet", "d", "b")
    ratio("BiLO nested-batch / BiLO jet", "f", "b")
    ratio("PINN textbook / PINN jet", "c", "a")
    ratio("PINN nested-batch / PINN jet", "e", "a")
    return res


if __name__ == "__main__":
    main()
