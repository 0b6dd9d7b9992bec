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
  (g) BiLO full step    what ``bilo train`` does per fine-tuning step: ``bilo.train.Run.step_once``
                        on the declared Fisher-KPP problem (``bilo.problems.fkpp``, paper preset:
                        width 128, depth 2, the --points grid of residual points), BiLO: lower
                        level (residual + θ-gradient loss, W), upper level (data misfit at the
                        51 x 51 noise-free observations of ``run_reference("fkpp", {"D": 2,
                        "rho": 2})``, θ), both Adam steps, the projection of θ, the record every
                        10 steps, the progress bar (writing to /dev/null, as in a log) and the
                        wall clock.  The run starts at the first fine-tuning step, from the
                        untrained network (the cost of a step does not depend on the weights);
                        no checkpoint falls in the timed steps (one per 1000 steps).
  (h) PINN full step    as (g) for PINN: one loss L_res + w_dat·misfit w.r.t. W and θ

Time: seconds per training step with torch's default number of threads (or --threads).  On the
CPU every variant lives in its own Python process (so that the state of the C allocator left by
one variant cannot help or hurt another); after ``--warmup`` untimed steps each, the processes take
``--steps`` timed steps strictly one at a time, round robin (so that a fluctuating machine load
affects all variants alike), with a short pause between steps so that the idle threads of the
previous worker are asleep.  Reported: the median, the minimum and the mean over the timed steps
(the mean carries the full steps' record every 10th step, which the median leaves out).

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one step above the memory allocated
before it.  On the CPU there is no per-step allocator peak to read, so we report the *autograd
graph memory*: the total bytes of the distinct tensor storages that autograd saves for the
backward pass while the loss is built, recorded with ``torch.autograd.graph.saved_tensors_hooks``
(each saved tensor is kept referenced until the loss is complete, so no storage can be reused
and counted twice).  That is what a step holds at its peak (just before backward) beyond the
weights, the optimiser state and transient temporaries; it includes the saved tensors of custom
autograd Functions and of the double-backward graphs built by ``create_graph=True``.  For the
full steps (g, h) the meter covers the whole step, so on the CPU it counts both levels' graphs
even where BiLO frees the lower one (41.1 MiB) before it builds the upper one (2.6 MiB).

Usage: ``python bench/step_cost.py [--steps 60] [--warmup 3] [--threads 2] [--variants abgh]
[--device cpu|cuda] [--breakdown]``; ``--breakdown`` times the parts of the full steps (g, h)
instead: the residual loss and the data misfit with their backward passes (each w.r.t. what it
trains: BiLO W, resp. θ; PINN both), the optimisers, zero_grad, the record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

if __package__ in (None, ""):  # run as a script from anywhere: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilo.network import MLP  # noqa: E402
from tests.fkpp_losses import (  # noqa: E402
    bilo_batched_loss,
    bilo_jet_loss,
    bilo_textbook_loss,
    pinn_batched_loss,
    pinn_jet_loss,
    pinn_textbook_loss,
)

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
    "g": ("(g) BiLO full step", "bilo", None),
    "h": ("(h) PINN full step", "pinn", None),
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


class FullStep(Variant):
    """`bilo train`'s fine-tuning step (`bilo.train.Run.step_once`) on the declared Fisher-KPP
    problem, paper preset, from the first fine-tuning step on; ``step()`` is one loop step."""

    def __init__(self, key: str, coords, theta, seed: int = 0):
        from bilo.problems import get_problem
        from bilo.strategies import METHODS, make_options
        from bilo.synthetic import run_reference

        self.name, method, _ = VARIANTS[key]
        problem = get_problem("fkpp")
        data = run_reference("fkpp", {"D": 2.0, "rho": 2.0})
        n = round(len(coords) ** 0.5)
        options = make_options(problem, method, "paper", {"n_res": (n, n)}, seed=seed,
                               device=str(coords.device))
        self._out = tempfile.TemporaryDirectory()
        self.run = METHODS[method].make_run(problem, data, None, options, self._out.name)
        self.run.step = options.settings.pretrain_steps
        self._log = open(os.devnull, "w")  # the bar's lines, as in a log file
        self.phase = self.run.start_phase("finetune", file=self._log)
        self.cuda = coords.device.type == "cuda"
        self.times = []

    def step(self, meter=None) -> float:
        with meter if meter is not None else contextlib.nullcontext():
            losses = self.run.step_once(self.phase)
        return float(sum(v.detach() for k, v in losses.items() if k in ("res", "rgrad")))


def make_variant(key: str, coords, theta):
    return (FullStep if VARIANTS[key][2] is None else Variant)(key, coords, theta)


def setup(args):
    dev = torch.device(args.device)
    coords = grid(args.points, torch.float32, dev)
    theta = torch.tensor([D_TRUE, RHO_TRUE], dtype=torch.float32, device=dev)
    return coords, theta


def run_in_process(keys, args) -> dict:
    """All variants in this process, stepped round robin."""
    coords, theta = setup(args)
    runs = {k: make_variant(k, coords, theta) for k in keys}
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


def _parts(v: FullStep) -> dict:
    """The parts of a full step, each a function of no arguments."""
    run, m, batch = v.run, v.run.method, v.run.batch
    losses = run.step_once(v.phase)
    # what each loss trains: BiLO's residual loss W, its misfit θ; PINN's both W and θ
    bilevel = m.takes_parameters
    lower_inputs = m.net_params if bilevel else m.net_params + m.upper_params
    upper_inputs = m.upper_params if bilevel else m.net_params + m.upper_params

    def lower():
        total = m.lower_losses(batch)[1]
        total.backward(inputs=lower_inputs)

    def upper():
        m.upper_objective(batch, {}).backward(inputs=upper_inputs)

    def optimisers():
        m.opt_net.step()
        m._step_upper()

    def zero_grad():
        m.opt_net.zero_grad(set_to_none=True)
        m.opt_upper.zero_grad(set_to_none=True)

    return {"residual loss + backward": lower, "data misfit + backward": upper,
            "both Adam steps + projection": optimisers, "zero_grad (both)": zero_grad,
            "record (every 10th step)": lambda: run._record(losses),
            "the method's step (finetune_step)": lambda: m.finetune_step(batch),
            "the loop's step (step_once)": lambda: run.step_once(v.phase)}


def breakdown(keys, args) -> dict:
    """Where a full step (g, h) goes: its parts timed one after the other, round robin, in this
    process, without pauses (as in the training loop); medians and minima in ms. The parts run
    outside the step, so they do not add up to it exactly (PINN's step takes one backward pass
    of the sum of both levels, not the two above)."""
    coords, theta = setup(args)
    out = {}
    for key in (k for k in keys if VARIANTS[k][2] is None):
        parts = _parts(make_variant(key, coords, theta))
        times = {name: [] for name in parts}
        for i in range(args.warmup + args.steps):
            for name, fn in parts.items():
                t0 = time.perf_counter()
                fn()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        print(f"{VARIANTS[key][0]}: parts, {args.steps} times each, round robin")
        for name, ts in times.items():
            print(f"  {name:<36} median {1e3 * statistics.median(ts):8.3f} ms   "
                  f"min {1e3 * min(ts):8.3f} ms")
        out[key] = times
    return out


def serve(key: str, args) -> None:
    """Worker process: one variant; steps on request ("step"), then "memory", then "quit"."""
    coords, theta = setup(args)
    v = make_variant(key, coords, theta)
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
    ap.add_argument("--variants", default="abcdefgh")
    ap.add_argument("--in-process", action="store_true", help="no subprocesses (default on GPUs)")
    ap.add_argument("--breakdown", action="store_true",
                    help="time the parts of the full steps (g, h) instead")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.serve:
        serve(args.serve, args)
        return None
    keys = [k for k in args.variants if k in VARIANTS]
    if args.breakdown:
        print(f"threads={torch.get_num_threads()} points={args.points**2}")
        return breakdown(keys, args)
    in_process = args.in_process or torch.device(args.device).type != "cpu"
    res = run_in_process(keys, args) if in_process else run_in_subprocesses(keys, args)

    dev = torch.device(args.device)
    mem_label = "peak MiB" if dev.type == "cuda" else "graph MiB"
    print(
        f"device={dev} threads={torch.get_num_threads()} points={args.points**2} width=128 "
        f"hidden=2 float32; {args.steps} timed steps per variant, round robin"
        + (" in one process" if in_process else ", one process per variant")
    )
    print(f"{'variant':<24} {'median s':>9} {'min s':>9} {'mean s':>9} {mem_label:>10} "
          f"{'loss':>11}")
    med = {}
    for k in keys:
        r = res[k]
        med[k] = statistics.median(r["times"])
        print(
            f"{VARIANTS[k][0]:<24} {med[k]:9.4f} {min(r['times']):9.4f} "
            f"{statistics.mean(r['times']):9.4f} {r['memory'] / 2**20:10.1f} {r['loss']:11.4e}"
        )

    def ratio(label, num, den):
        if num in res and den in res:
            t = med[num] / med[den]
            t_min = min(res[num]["times"]) / min(res[den]["times"])
            m = res[num]["memory"] / res[den]["memory"]
            print(f"{label:<34} time {t:5.2f}x (minima {t_min:5.2f}x)   memory {m:5.2f}x")

    ratio("BiLO jet / PINN jet", "b", "a")
    ratio("BiLO textbook / BiLO jet", "d", "b")
    ratio("BiLO nested-batch / BiLO jet", "f", "b")
    ratio("PINN textbook / PINN jet", "c", "a")
    ratio("PINN nested-batch / PINN jet", "e", "a")
    # the loop around the loss: targets full/loss+backward <= 1.15, full BiLO/full PINN <= 2
    ratio("BiLO full step / BiLO jet", "g", "b")
    ratio("PINN full step / PINN jet", "h", "a")
    ratio("BiLO full step / PINN full step", "g", "h")
    return res


if __name__ == "__main__":
    main()
