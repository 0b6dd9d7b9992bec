// The page: controls, the settings in the URL, the animation loop and the four views.

import { engineAPI } from "./api.js";
import { COLORS, contourBackground, extent, ink, plot } from "./plots.js";
import { PROBLEMS } from "./problems.js";
import { exactDataLoss, linspace, Trainer } from "./trainer.js";

// per-problem defaults of the settings that depend on the problem
const PROBLEM_DEFAULTS = {
  exponential: { nRes: 51, nData: 21, width: 32, delta: 0.3, noise: 0.05 },
  logistic: { nRes: 51, nData: 21, width: 32, delta: 0.5, noise: 0.01 },
  fkpp: { nRes: 15, nData: 9, width: 16, delta: 0.5, noise: 0.01, lrW: 5e-3, lrTheta: 2e-2 },
};

const COMMON = {
  problem: "logistic", method: "bilo", mode: "auto", pretrainSteps: 1000, lrW: 2e-3,
  lrTheta: 1e-2, wRes: 1, wRgrad: 0.1, wDat: 1, depth: 2, seed: 0,
};

function defaults(problem) {
  const p = PROBLEMS[problem];
  return { ...COMMON, problem, theta0: [...p.thetaInit], thetaTrue: [...p.thetaTrue], ...PROBLEM_DEFAULTS[problem] };
}

// the controls: key, label, kind, [options], reset (a change restarts the run)
const CONTROLS = [
  ["group", "Problem and method"],
  ["problem", "Problem", "select", Object.keys(PROBLEMS).map((k) => [k, PROBLEMS[k].label.split(" growth")[0].split("  ")[0]]), true],
  ["method", "Method", "select", [["bilo", "BiLO"], ["pinn", "PINN"]], true],
  ["mode", "Mode", "select", [["auto", "auto (pre, then fine)"], ["pretrain", "pre-train (θ fixed)"], ["finetune", "fine-tune (infer θ)"]], false],
  ["pretrainSteps", "Pre-training steps (auto)", "int", null, false],
  ["group", "Parameters and data"],
  ["theta0", "Initial θ", "list", null, true],
  ["thetaTrue", "True θ (makes the data)", "list", null, true],
  ["nRes", "Residual points (per axis)", "int", null, true],
  ["nData", "Data points (per axis)", "int", null, true],
  ["noise", "Noise σ", "float", null, true],
  ["seed", "Random seed", "int", null, true],
  ["group", "Optimisation"],
  ["lrW", "Learning rate of W", "float", null, false],
  ["lrTheta", "Learning rate of θ", "float", null, false],
  ["wRes", "Weight of L_res", "float", null, false],
  ["wRgrad", "Weight of L_rgrad (BiLO)", "float", null, false],
  ["wDat", "Weight of L_dat (PINN)", "float", null, false],
  ["group", "Network and views"],
  ["width", "Width", "int", null, true],
  ["depth", "Depth (tanh layers)", "int", null, true],
  ["delta", "δ of the local-operator view", "float", null, false],
];
const KINDS = Object.fromEntries(CONTROLS.filter((c) => c[0] !== "group").map((c) => [c[0], c[2]]));
const RESETS = new Set(CONTROLS.filter((c) => c[4]).map((c) => c[0]));

let settings = readURL();
let trainer = null;
let playing = false;
let cache = {};

// ---- settings <-> URL --------------------------------------------------------------------
function parseValue(kind, text) {
  if (kind === "list") return text.split(",").map(Number);
  if (kind === "int") return Math.round(Number(text));
  if (kind === "float") return Number(text);
  return text;
}

function valid(key, value) {
  if (KINDS[key] === "list") return value.every(Number.isFinite);
  if (KINDS[key] === "int" || KINDS[key] === "float") return Number.isFinite(value);
  return true;
}

function readURL() {
  const q = new URLSearchParams(window.location.search);
  const problem = PROBLEMS[q.get("problem")] ? q.get("problem") : COMMON.problem;
  const s = defaults(problem);
  for (const key of Object.keys(KINDS)) {
    if (!q.has(key) || key === "problem") continue;
    const value = parseValue(KINDS[key], q.get(key));
    if (valid(key, value)) s[key] = value;
  }
  return sanitize(s);
}

function sanitize(s) {
  const p = PROBLEMS[s.problem], n = p.params.length;
  for (const key of ["theta0", "thetaTrue"]) {
    if (!Array.isArray(s[key]) || s[key].length !== n) s[key] = key === "theta0" ? [...p.thetaInit] : [...p.thetaTrue];
    s[key] = s[key].map((v, j) => Math.max(v, p.lower[j]));
  }
  if (!["bilo", "pinn"].includes(s.method)) s.method = "bilo";
  if (!["auto", "pretrain", "finetune"].includes(s.mode)) s.mode = "auto";
  const clamp = (k, lo, hi) => { s[k] = Math.min(Math.max(s[k], lo), hi); };
  clamp("nRes", 2, p.coords.length > 1 ? 41 : 401);
  clamp("nData", 2, p.coords.length > 1 ? 31 : 201);
  clamp("width", 1, 128);
  clamp("depth", 1, 6);
  clamp("noise", 0, 10);
  clamp("pretrainSteps", 0, 1e7);
  return s;
}

function writeURL() {
  const q = new URLSearchParams();
  for (const key of Object.keys(KINDS)) q.set(key, Array.isArray(settings[key]) ? settings[key].join(",") : `${settings[key]}`);
  window.history.replaceState(null, "", `${window.location.pathname}?${q}`);
}

// ---- controls -----------------------------------------------------------------------------
function buildControls() {
  const form = document.getElementById("settings");
  form.innerHTML = "";
  for (const [key, label, kind, options, reset] of CONTROLS) {
    if (key === "group") {
      const div = document.createElement("div");
      div.className = "group";
      div.textContent = label;
      form.append(div);
      continue;
    }
    const wrap = document.createElement("label");
    const text = document.createElement("span");
    text.textContent = label + (key === "theta0" || key === "thetaTrue" ? ` (${PROBLEMS[settings.problem].params.join(", ")})` : "");
    if (reset) text.innerHTML += ' <span class="reset-mark">↺</span>';
    let input;
    if (kind === "select") {
      input = document.createElement("select");
      for (const [value, name] of options) input.append(new Option(name, value));
    } else {
      input = document.createElement("input");
      input.type = kind === "list" ? "text" : "number";
      if (kind === "int") input.step = "1";
      if (kind === "float") input.step = "any";
    }
    input.id = `ctl-${key}`;
    input.name = key;
    input.addEventListener("change", () => onControl(key, input.value));
    wrap.append(text, input);
    form.append(wrap);
  }
  syncControls();
}

function syncControls() {
  for (const key of Object.keys(KINDS)) {
    const el = document.getElementById(`ctl-${key}`);
    el.value = Array.isArray(settings[key]) ? settings[key].join(", ") : `${settings[key]}`;
  }
  document.getElementById("ctl-wRgrad").disabled = settings.method !== "bilo";
  document.getElementById("ctl-wDat").disabled = settings.method !== "pinn";
  document.getElementById("ctl-pretrainSteps").disabled = settings.mode !== "auto";
}

function onControl(key, text) {
  const value = parseValue(KINDS[key], text);
  if (!valid(key, value)) { syncControls(); return; }
  if (key === "problem") {
    settings = defaults(value);
    buildControls();
  } else {
    settings = sanitize({ ...settings, [key]: value });
  }
  syncControls();
  writeURL();
  if (RESETS.has(key)) reset();
  else applyLive();
  draw();
}

// settings that take effect without a restart
function applyLive() {
  if (!trainer) return;
  Object.assign(trainer.cfg, { wRes: settings.wRes, wRgrad: settings.wRgrad, wDat: settings.wDat });
  trainer.optW.lr = settings.lrW;
  trainer.optTheta.lr = settings.lrTheta;
}

// ---- training -----------------------------------------------------------------------------
function reset() {
  trainer = new Trainer({ ...settings, thetaInit: settings.theta0 });
  cache = {};
}

function currentMode() {
  if (settings.mode !== "auto") return settings.mode;
  return trainer.steps < settings.pretrainSteps ? "pretrain" : "finetune";
}

function step(n = 1) {
  for (let i = 0; i < n; i++) trainer.step(currentMode());
}

function frame() {
  if (!playing) return;
  const start = performance.now();
  do step(1); while (performance.now() - start < 30);
  draw();
  requestAnimationFrame(frame);
}

function setPlaying(on) {
  playing = on;
  const btn = document.getElementById("btn-play");
  btn.textContent = on ? "⏸ Pause" : "▶ Play";
  btn.classList.toggle("playing", on);
  if (on) requestAnimationFrame(frame);
}

// ---- views --------------------------------------------------------------------------------
const fmtE = (v) => (v === undefined ? "–" : v.toExponential(2));

function drawStatus() {
  const p = trainer.problem, last = trainer.history.at(-1) ?? {};
  const theta = p.params.map((name, j) => `${name} = ${trainer.theta[j].toFixed(4)}`).join(", ");
  const mode = trainer.steps ? last.mode : currentMode();
  const modeName = { pretrain: "pre-training", finetune: "fine-tuning" }[mode];
  document.getElementById("status").textContent = `step ${trainer.steps} (${modeName}) · ${theta}`
    + ` · L_res ${fmtE(last.res)}` + (settings.method === "bilo" ? ` · L_rgrad ${fmtE(last.rgrad)}` : "")
    + ` · L_dat ${fmtE(last.dat)}`;
}

// FKPP: slices of u(x, t) at three of the data's times
function sliceTimes() {
  const n = settings.nData;
  return [...new Set([1 / 3, 2 / 3, 1].map((f) => Math.round(f * (n - 1)) / (n - 1)))];
}

const SHADES = ["#74c0fc", "#1f6feb", "#0b3d91"];

function drawSolution() {
  const canvas = document.getElementById("view-u"), p = trainer.problem, data = trainer.data;
  const series = [];
  if (p.coords.length === 1) {
    const t = linspace(0, 1, 121), pts = t.map((v) => [v]);
    series.push({ x: t, y: p.exact(settings.thetaTrue, pts), color: COLORS.exact, dash: [6, 4], label: "exact (true θ)" });
    series.push({ x: t, y: p.exact(Array.from(trainer.theta), pts), color: "#adb5bd", width: 1.2, label: "exact (current θ)" });
    series.push({ x: t, y: trainer.predict(pts), color: COLORS.nn, label: "u_NN (current θ)" });
    series.push({ x: data.points.map((q) => q[0]), y: data.values, color: COLORS.data, points: true, label: "data" });
    const ys = series.flatMap((s) => s.y);
    plot(canvas, { title: "Solution", xlabel: "t", ylabel: "u", xlim: [0, 1], ylim: extent(ys), series });
    return;
  }
  const x = linspace(0, 1, 81);
  sliceTimes().forEach((tk, i) => {
    const pts = x.map((v) => [v, tk]), color = SHADES[i % SHADES.length];
    series.push({ x, y: p.exact(settings.thetaTrue, pts), color: COLORS.exact, dash: [6, 4], width: 1.2, label: i ? null : "exact (true θ)" });
    series.push({ x, y: trainer.predict(pts), color, label: `u_NN, t = ${tk.toFixed(2)}` });
    const idx = data.points.map((q, k) => (Math.abs(q[1] - tk) < 1e-9 ? k : -1)).filter((k) => k >= 0);
    series.push({ x: idx.map((k) => data.points[k][0]), y: idx.map((k) => data.values[k]), color, points: true });
  });
  plot(canvas, { title: "Solution at three times", xlabel: "x", ylabel: "u", xlim: [0, 1], ylim: extent(series.flatMap((s) => s.y)), series });
}

function drawLosses() {
  const canvas = document.getElementById("view-loss"), h = trainer.history;
  const every = Math.max(1, Math.floor(h.length / 800));
  const rows = h.filter((_, i) => i % every === 0 || i === h.length - 1);
  const x = rows.map((r) => r.step);
  const series = [
    { x, y: rows.map((r) => r.res), color: COLORS.res, label: "L_res" },
    ...(settings.method === "bilo" ? [{ x, y: rows.map((r) => r.rgrad), color: COLORS.rgrad, label: "L_rgrad" }] : []),
    { x, y: rows.map((r) => r.dat), color: COLORS.dat, label: "L_dat" },
  ];
  const switchAt = h.findIndex((r) => r.mode === "finetune");
  const ylim = extent(series.flatMap((s) => s.y), 0, true);
  if (switchAt > 0) series.push({ x: [h[switchAt].step, h[switchAt].step], y: ylim, color: "#bbb", dash: [3, 3], width: 1, label: "fine-tuning starts" });
  plot(canvas, { title: "Losses", xlabel: "step", logy: true, xlim: [0, Math.max(10, trainer.steps)], ylim, series });
}

function thetaRange(j) {
  const vals = [settings.theta0[j], settings.thetaTrue[j], ...trainer.history.map((r) => r.theta[j])];
  const lo = Math.min(...vals), hi = Math.max(...vals), pad = 0.25 * (hi - lo || 1);
  return [Math.max(lo - pad, trainer.problem.lower[j]), hi + pad];
}

function drawTheta() {
  const canvas = document.getElementById("view-theta"), p = trainer.problem, h = trainer.history;
  const path = h.filter((r, i) => r.mode === "finetune" && (i % Math.max(1, Math.floor(h.length / 400)) === 0 || i === h.length - 1));
  if (p.params.length === 1) {
    const [lo, hi] = thetaRange(0);
    const a = linspace(lo, hi, 161), L = a.map((v) => exactDataLoss(settings.problem, [v], trainer.data));
    const pathL = path.map((r) => exactDataLoss(settings.problem, r.theta, trainer.data));
    const now = exactDataLoss(settings.problem, Array.from(trainer.theta), trainer.data);
    const ylim = extent([...L, ...pathL], 0, true);
    plot(canvas, {
      title: `θ = ${p.params[0]} over the data loss of the exact solution`, xlabel: p.params[0], logy: true, xlim: [lo, hi], ylim,
      series: [
        { x: a, y: L, color: "#495057", label: "L_dat(exact u at θ)" },
        { x: [settings.thetaTrue[0], settings.thetaTrue[0]], y: ylim, color: "#f59f00", dash: [4, 3], label: "true θ" },
        { x: path.map((r) => r.theta[0]), y: pathL, color: COLORS.nn, points: true, radius: 2, label: "θ during fine-tuning" },
        { x: [trainer.theta[0]], y: [now], color: COLORS.data, points: true, radius: 5, label: "current θ" },
      ],
    });
    return;
  }
  // the contours cost 441 solves: a box with room to spare, recomputed only when θ leaves it
  const inside = (b) => b && [0, 1].every((j) => [settings.theta0[j], settings.thetaTrue[j], trainer.theta[j]]
    .every((v) => v >= b[j][0] && v <= b[j][1]));
  if (!inside(cache.box)) {
    cache.box = [0, 1].map((j) => {
      const [lo, hi] = thetaRange(j), pad = 0.3 * (hi - lo);
      return [Math.max(lo - pad, p.lower[j]), hi + pad];
    });
    const xs = linspace(...cache.box[0], 21), ys = linspace(...cache.box[1], 21);
    const values = ys.map((y) => xs.map((x) => exactDataLoss(settings.problem, [x, y], trainer.data)));
    cache.contour = contourBackground(xs, ys, values);
  }
  const [[x0, x1], [y0, y1]] = cache.box;
  plot(canvas, {
    title: `(${p.params.join(", ")}) over the data loss of the exact solution (log, contours)`, xlabel: p.params[0], ylabel: p.params[1],
    xlim: [x0, x1], ylim: [y0, y1], background: cache.contour,
    series: [
      { x: path.map((r) => r.theta[0]), y: path.map((r) => r.theta[1]), color: "#fff", width: 2, label: "θ during fine-tuning" },
      { x: [settings.thetaTrue[0]], y: [settings.thetaTrue[1]], color: COLORS.truth, points: true, radius: 6, label: "true θ" },
      { x: [trainer.theta[0]], y: [trainer.theta[1]], color: COLORS.data, points: true, radius: 5, label: "current θ" },
    ],
  });
}

function drawLocal() {
  const canvas = document.getElementById("view-local"), p = trainer.problem, d = settings.delta;
  const theta = Array.from(trainer.theta);
  const shifted = (s) => theta.map((v, j) => Math.max(v + s * d, p.lower[j]));
  const two = p.coords.length > 1;
  const x = linspace(0, 1, 101), pts = x.map((v) => (two ? [v, 1] : [v]));
  const series = [{ x, y: trainer.predict(pts), color: COLORS.nn, width: 1.2, label: "u_NN, θ" }];
  for (const [s, color, name] of [[-1, COLORS.minus, "θ − δ"], [1, COLORS.plus, "θ + δ"]]) {
    const th = shifted(s);
    series.push({ x, y: p.exact(th, pts), color, dash: [6, 4], width: 1.2, label: `exact, ${name}` });
    series.push({ x, y: trainer.predict(pts, Float64Array.from(th)), color, label: `u_NN, ${name}` });
  }
  plot(canvas, {
    title: `Local operator, δ = ${d}${two ? ` on ${p.params.join(" and ")}, t = 1` : ""}`
      + (settings.method === "pinn" ? " · PINN: u_NN has no θ input" : ""), xlabel: two ? "x" : "t", ylabel: "u",
    xlim: [0, 1], ylim: extent(series.flatMap((q) => q.y)), series,
  });
}

function draw() {
  drawStatus();
  drawSolution();
  drawLosses();
  drawTheta();
  drawLocal();
}

// ---- start --------------------------------------------------------------------------------
buildControls();
writeURL();
reset();
draw();
document.getElementById("btn-play").addEventListener("click", () => setPlaying(!playing));
document.getElementById("btn-step").addEventListener("click", () => { setPlaying(false); step(1); draw(); });
document.getElementById("btn-reset").addEventListener("click", () => { setPlaying(false); reset(); draw(); });

// for the tests (tests/test_playground.py) and the curious: the engine and the page's state
window.playgroundTest = {
  ...engineAPI,
  settings: () => JSON.parse(JSON.stringify(settings)),
  controls: () => Object.fromEntries(Object.keys(KINDS).map((k) => [k, document.getElementById(`ctl-${k}`).value])),
  /** Restart, then `pretrain` pre-training and `finetune` fine-tuning steps, synchronously. */
  run(pretrain, finetune) {
    setPlaying(false);
    reset();
    const t0 = performance.now();
    for (let i = 0; i < pretrain; i++) trainer.step("pretrain");
    for (let i = 0; i < finetune; i++) trainer.step("finetune");
    const seconds = (performance.now() - t0) / 1000;
    draw();
    return { theta: Array.from(trainer.theta), seconds, steps: trainer.steps, last: trainer.history.at(-1) };
  },
  ink: (id) => ink(document.getElementById(id)),
  play: setPlaying,
  draw,
  state: () => ({ steps: trainer.steps, theta: Array.from(trainer.theta) }),
};
