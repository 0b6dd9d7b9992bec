"""The BiLO playground (apps/playground): its in-browser engine against the trainer, and the page
in a real browser (Debian's chromium driven by Playwright, headless).

* Parity: a float64 network from `bilo.methods` (BiLO and PINN, on exponential growth, logistic
  growth and Fisher-KPP) is exported to JSON; the page's engine evaluates the losses and their
  gradients w.r.t. W and θ at the same points, and takes a few Adam steps; all equal torch's to
  1e-10 relative.
* The page: loads without console errors, BiLO fine-tuning on logistic growth finds a ≈ 2, the
  canvases are drawn, and a URL with settings restores them. A screenshot is kept.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch

from apps.playground import make_server
from bilo.cli import main
from bilo.methods import PINN, Batch, BiLO
from bilo.model import Parameter, Problem
from bilo.problems.fkpp import FisherKPP
from bilo.problems.logistic import Logistic

CHROMIUM = "/usr/bin/chromium"
TOLERANCE = 1e-10


class Exponential(Problem):
    """u' = a·u, u(0) = 1, as the playground's first problem (u = 1 + t·N(t, a))."""

    name = "exponential"
    coords = ("t",)
    parameters = (Parameter("a", 0.5, bounds=(1e-6, float("inf"))),)
    residual_keys = ((), ("t",))

    def output(self, net, coords, theta, functions):
        return 1.0 + coords["t"] * net

    def residual(self, u, coords, theta, functions):
        return u.d("t") - theta["a"] * u


PROBLEMS = {"exponential": Exponential, "logistic": Logistic, "fkpp": FisherKPP}
# (θ at which the gradients are taken, true θ of the data, residual / data points per axis)
CASES = {"exponential": ([0.7], [1.0], 21, 11), "logistic": ([1.3], [2.0], 21, 11),
         "fkpp": ([1.2, 0.8], [2.0, 2.0], 9, 5)}
WEIGHTS = {"wRes": 1.0, "wRgrad": 0.3, "wDat": 2.0}


@contextlib.contextmanager
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _grid(n_coords: int, n: int) -> np.ndarray:
    axes = np.meshgrid(*[np.linspace(0.0, 1.0, n)] * n_coords, indexing="ij")
    return np.stack([a.reshape(-1) for a in axes], axis=1)


def torch_case(problem_name: str, method_name: str, steps: int = 5, seed: int = 0) -> dict:
    """A float64 method of the trainer at a fixed random network; its losses, gradients and the
    state after `steps` fine-tuning steps, with the JSON the page's engine needs."""
    theta, theta_true, n_res, n_dat = CASES[problem_name]
    problem = PROBLEMS[problem_name]()
    with float64():
        torch.manual_seed(seed)
        kwargs = ({"w_rgrad": WEIGHTS["wRgrad"]} if method_name == "bilo"
                  else {"w_dat": WEIGHTS["wDat"]})
        cls = BiLO if method_name == "bilo" else PINN
        method = cls(problem, 8, 3, torch.tensor(theta), lr_net=1e-2, lr_theta=3e-2, **kwargs)
        net = method.surrogate.network
        colloc = problem.collocation((n_res,) * len(problem.coords), dtype=torch.float64)
        points = _grid(len(problem.coords), n_dat)
        rng = np.random.default_rng(seed)
        values = 0.5 + 0.3 * rng.standard_normal(len(points))  # any data will do here
        batch = Batch(collocation=colloc, obs_points=torch.tensor(points),
                      obs_values=torch.tensor(values))
        weights = {k: v.tolist() for k, v in net.state_dict().items()}
        names = [n for n, _ in net.named_parameters()]

        losses, lower, _ = method.lower_losses(batch)
        if method_name == "bilo":
            lower.backward(inputs=method.net_params)
            method.upper_objective(batch, losses).backward(inputs=method.upper_params)
        else:
            (lower + method.upper_objective(batch, losses, method.w_dat)).backward()
        grad_w = {n: p.grad.reshape(-1).tolist() for n, p in net.named_parameters()}
        grad_theta = method.theta.grad.tolist()
        for _ in range(steps):
            method.finetune_step(batch)
        after = {n: p.detach().reshape(-1).tolist() for n, p in net.named_parameters()}
    return {
        "problem": problem_name, "method": method_name, "names": names,
        "config": {"problem": problem_name, "method": method_name, "mode": "finetune",
                   "colloc": colloc.tolist(), "dataPoints": points.tolist(),
                   "dataValues": values.tolist(), "lrW": 1e-2, "lrTheta": 3e-2, **WEIGHTS},
        "weights": weights, "theta": theta, "steps": steps,
        "expected": {"losses": {k: float(v.detach()) for k, v in losses.items()}, "gradW": grad_w,
                     "gradTheta": grad_theta, "weightsAfter": after,
                     "thetaAfter": method.theta.detach().tolist()},
    }


# ---- the browser --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site_url():
    server = make_server(0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    # `make test` installs both (Debian's chromium, pip's playwright): no skip when missing
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playground tests need playwright (pip install playwright; `make setup` "
                    "installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the playground tests need Debian's chromium at {CHROMIUM} (apt-get install "
                    "chromium; `make setup` installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page whose console errors and uncaught exceptions are collected in page.errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    page.close()


def _open(page, url):
    page.goto(url)
    page.wait_for_function("window.playgroundTest !== undefined", timeout=15_000)


def _relative(got, want) -> float:
    """max |got - want| / max |want| over an array (a scalar: |got - want| / |want|)."""
    got, want = np.atleast_1d(np.asarray(got, float)), np.atleast_1d(np.asarray(want, float))
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def test_engine_parity_with_the_trainer(page, site_url, report):
    """For a fixed float64 network of bilo.methods (BiLO and PINN; exponential, logistic,
    Fisher-KPP), the page's engine in chromium gives torch's losses, their gradients w.r.t. W
    and θ, and the weights and θ after 5 fine-tuning steps (Adam), to 1e-10 relative."""
    _open(page, site_url)
    cases = [torch_case(p, m) for p in PROBLEMS for m in ("bilo", "pinn")]
    results = page.evaluate("""cases => cases.map(c => ({
        at: window.playgroundTest.evaluate(c.config, c.weights, c.theta),
        after: window.playgroundTest.train(c.config, c.weights, c.theta, c.steps)}))""", cases)
    worst = {}
    for case, got in zip(cases, results, strict=True):
        want, label = case["expected"], f"{case['problem']}/{case['method']}"
        errors = {f"L_{k}": _relative(got["at"]["losses"][k], v)
                  for k, v in want["losses"].items()}
        errors["grad W"] = max(_relative(got["at"]["gradW"][n], want["gradW"][n])
                               for n in case["names"])
        errors["grad θ"] = _relative(got["at"]["gradTheta"], want["gradTheta"])
        errors["W after 5 steps"] = max(_relative(got["after"]["weights"][n],
                                                  want["weightsAfter"][n]) for n in case["names"])
        errors["θ after 5 steps"] = _relative(got["after"]["theta"], want["thetaAfter"])
        assert set(got["at"]["losses"]) == set(want["losses"]), label
        for name, err in errors.items():
            assert err < TOLERANCE, f"{label}: {name} differs by {err:.2e} (relative)"
        worst[label] = max(errors.values())
    report("max relative difference engine vs torch: " + ", ".join(
        f"{k} {v:.1e}" for k, v in worst.items()))
    assert not page.errors, page.errors


def test_page_trains_bilo_and_draws(page, site_url, report, tmp_path):
    """The page loads without console errors; BiLO (500 pre-training steps, then 2000
    fine-tuning steps, run synchronously) moves a from 1 to within 5 % of 2 on logistic growth
    with 1 % noise; every view is drawn; a screenshot is kept."""
    _open(page, site_url)
    assert page.evaluate("window.playgroundTest.settings()")["problem"] == "logistic"
    start = time.perf_counter()
    out = page.evaluate("window.playgroundTest.run(500, 2000)")
    seconds = time.perf_counter() - start
    a = out["theta"][0]
    assert abs(a - 2.0) / 2.0 < 0.05, out
    for canvas in ("view-u", "view-loss", "view-theta", "view-local"):
        assert page.evaluate(f"window.playgroundTest.ink('{canvas}')") > 2000, canvas
    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"playground screenshot: {shot}")
    report(f"logistic BiLO a = {a:.4f} after 500 + 2000 steps in {seconds:.1f} s "
           f"(chromium); screenshot {shot}")
    assert not page.errors, page.errors


def test_url_restores_settings(page, site_url):
    """A shared link restores its settings (controls and the run) and the page rewrites the
    address with every setting; Fisher-KPP with PINN steps (Step, Play, Pause) and draws
    without errors."""
    query = ("?problem=fkpp&method=pinn&mode=finetune&theta0=1.5,0.5&thetaTrue=2.5,1.5"
             "&nRes=7&nData=5&noise=0.02&lrW=0.001&wDat=3&width=12&depth=3&seed=4")
    _open(page, site_url + query)
    settings = page.evaluate("window.playgroundTest.settings()")
    expected = {"problem": "fkpp", "method": "pinn", "mode": "finetune", "theta0": [1.5, 0.5],
                "thetaTrue": [2.5, 1.5], "nRes": 7, "nData": 5, "noise": 0.02, "lrW": 0.001,
                "wDat": 3, "width": 12, "depth": 3, "seed": 4}
    assert {k: settings[k] for k in expected} == expected
    controls = page.evaluate("window.playgroundTest.controls()")
    assert controls["problem"] == "fkpp" and controls["method"] == "pinn"
    assert controls["theta0"] == "1.5, 0.5" and controls["width"] == "12"
    # the page writes the full settings back to its address: that link restores them too
    link = page.url
    assert "theta0=1.5%2C0.5" in link and "width=12" in link
    page.click("#btn-step")
    page.click("#btn-step")
    state = page.evaluate("window.playgroundTest.state()")
    assert state["steps"] == 2 and state["theta"] != [1.5, 0.5]
    for canvas in ("view-u", "view-loss", "view-theta", "view-local"):
        assert page.evaluate(f"window.playgroundTest.ink('{canvas}')") > 2000, canvas
    page.click("#btn-play")  # the animation runs steps until paused
    page.wait_for_function("window.playgroundTest.state().steps > 4", timeout=15_000)
    page.click("#btn-play")
    paused = page.evaluate("window.playgroundTest.state().steps")
    page.wait_for_timeout(300)
    assert page.evaluate("window.playgroundTest.state().steps") == paused
    _open(page, link)
    assert page.evaluate("window.playgroundTest.settings()") == settings
    assert not page.errors, page.errors


# ---- the command line -----------------------------------------------------------------------
def test_cli_export_writes_the_static_site(tmp_path):
    """`bilo playground --export DIR` writes index.html, style.css and the JavaScript modules
    that index.html and the modules import."""
    assert main(["playground", "--export", str(tmp_path / "site")]) == 0
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "style.css").is_file()
    for module in ("main.js", "api.js", "tape.js", "jet.js", "model.js", "trainer.js",
                   "problems.js", "plots.js"):
        assert (site / "js" / module).is_file(), module
    assert not list(site.glob("*.py"))


def test_cli_serves_the_page(tmp_path):
    """`bilo playground --port P` prints the URL and serves the page (JavaScript with a
    JavaScript MIME type, which module scripts need)."""
    proc = subprocess.Popen([sys.executable, "-m", "bilo.cli", "playground", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:"), line
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"BiLO playground" in response.read()
        with urllib.request.urlopen(url.rsplit("/", 1)[0] + "/js/main.js", timeout=10) as r:
            assert "javascript" in r.headers["Content-Type"]
        # a second server on the same port: one line, exit code 2
        taken = subprocess.run([sys.executable, "-m", "bilo.cli", "playground", "--port",
                                url.split(":")[2].split("/")[0]], capture_output=True, text=True,
                               timeout=60)
        assert taken.returncode == 2 and "Traceback" not in taken.stderr, taken.stderr
        assert "--port" in taken.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)

