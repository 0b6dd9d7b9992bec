// Losses, their gradients and the optimisation steps of BiLO and PINN (bilo/methods.py).
//
// BiLO: the network takes θ as an input. Lower level: L_res + w_rgrad·L_rgrad moves W, with
// L_rgrad = Σ_θ mean((∂θ r)²); upper level: L_dat moves θ. Both gradients at the same (W, θ),
// then both Adam steps (simultaneous gradient descent). PINN: θ is not an input; one loss
// w_res·L_res + w_dat·L_dat moves W and θ. Pre-training keeps θ at its initial value and moves
// W with the lower-level (BiLO) or residual (PINN) loss.

import { Channels, Jet } from "./jet.js";
import { initWeights, normal, parameterNames, rng, weightLeaves, networkJet } from "./model.js";
import { PROBLEMS } from "./problems.js";
import { add, backward, element, leaf, meanSquare, resetTape, scale, sub, zeroGrads } from "./tape.js";

export const METHODS = ["bilo", "pinn"];

export function linspace(a, b, n) {
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

/** An evenly spaced grid over the unit box, one axis per coordinate, ordered as torch.meshgrid
 * with indexing "ij" (the last coordinate fastest), as Problem.collocation. */
export function grid(nCoords, n) {
  const axis = linspace(0, 1, n);
  let pts = [[]];
  for (let c = 0; c < nCoords; c++) pts = pts.flatMap((p) => axis.map((v) => [...p, v]));
  return pts;
}

const channelCache = new Map();
function channelsFor(problem, method, valueOnly) {
  const key = `${problem.label}|${method}|${valueOnly}`;
  if (!channelCache.has(key)) {
    const vars = method === "bilo" ? [...problem.coords, ...problem.params] : [...problem.coords];
    let wanted = [[]];
    if (!valueOnly) {
      wanted = [...problem.residualKeys];
      if (method === "bilo") {
        for (const k of problem.residualKeys) for (const p of problem.params) wanted.push([...k, p]);
      }
    }
    channelCache.set(key, new Channels(vars, wanted));
  }
  return channelCache.get(key);
}

/** u's jet at points (rows of coordinates), with the coordinate and θ jets. */
export function uJet(problem, method, L, w, thetaLeaf, points, valueOnly) {
  const ch = channelsFor(problem, method, valueOnly);
  const n = points.length, nc = problem.coords.length;
  const P = leaf(Float64Array.from(points.flat()), n, nc, false);
  const coords = {};
  problem.coords.forEach((name, k) => {
    const col = leaf(Float64Array.from(points, (p) => p[k]), n, 1, false);
    coords[name] = valueOnly ? Jet.constant(ch, col) : Jet.variable(ch, name, col);
  });
  const theta = {};
  problem.params.forEach((name, j) => {
    const v = element(thetaLeaf, j);
    theta[name] = method === "bilo" && !valueOnly ? Jet.variable(ch, name, v) : Jet.constant(ch, v);
  });
  const bilo = method === "bilo";
  const net = networkJet(L, w, ch, P, thetaLeaf, problem.coords, bilo && !valueOnly ? problem.params : []);
  return { u: problem.output(net, coords), coords, theta, ch };
}

/**
 * The losses at (W, θ) and the gradients one step uses.
 * cfg: {problem (name), method, mode ("pretrain" | "finetune"), colloc, dataPoints, dataValues,
 *       wRes, wRgrad, wDat}; returns {losses: {res, rgrad (BiLO), dat}, gradW: {name: array},
 *       gradTheta: array}. gradW: of the lower-level loss (BiLO) or the PINN loss; gradTheta:
 *       of the data loss (BiLO) or the PINN loss (fine-tuning), zeros when pre-training.
 */
export function evaluate(cfg, w, thetaValues) {
  const problem = PROBLEMS[cfg.problem];
  const method = cfg.method;
  resetTape();
  const L = weightLeaves(w, true);
  const thetaLeaf = leaf(Float64Array.from(thetaValues), 1, thetaValues.length, true);
  const { u, coords, theta, ch } = uJet(problem, method, L, w, thetaLeaf, cfg.colloc, false);
  const r = problem.residual(u, coords, theta);
  const losses = {};
  const res = meanSquare(r.value);
  losses.res = res.item();
  let lower = scale(res, cfg.wRes ?? 1);
  if (method === "bilo") {
    let rgrad = null;
    for (const p of problem.params) {
      const term = meanSquare(r.parts[ch.of([p])]);
      rgrad = rgrad ? add(rgrad, term) : term;
    }
    losses.rgrad = rgrad.item();
    lower = add(lower, scale(rgrad, cfg.wRgrad ?? 0.1));
  }
  const ud = uJet(problem, method, L, w, thetaLeaf, cfg.dataPoints, true).u.value;
  const misfit = sub(ud, leaf(Float64Array.from(cfg.dataValues), cfg.dataValues.length, 1, false));
  const dat = meanSquare(misfit);
  losses.dat = dat.item();
  const names = parameterNames(w.depth);
  const wLeaves = names.map((n) => L[n]);
  const grab = (t, n) => (t.grad ? Float64Array.from(t.grad) : new Float64Array(n));
  let gradW, gradTheta;
  const total = method === "pinn" && cfg.mode === "finetune"
    ? add(lower, scale(dat, cfg.wDat ?? 1)) : lower;
  backward(total);
  gradW = Object.fromEntries(names.map((n) => [n, grab(L[n], L[n].size)]));
  if (cfg.mode !== "finetune") {
    gradTheta = new Float64Array(thetaValues.length);
  } else if (method === "pinn") {
    gradTheta = grab(thetaLeaf, thetaValues.length);
  } else {
    zeroGrads([...wLeaves, thetaLeaf]);
    backward(dat);
    gradTheta = grab(thetaLeaf, thetaValues.length);
  }
  resetTape();
  return { losses, gradW, gradTheta };
}

/** u at points (values only, no gradients). */
export function predict(cfg, w, thetaValues, points) {
  const problem = PROBLEMS[cfg.problem];
  resetTape();
  const L = weightLeaves(w, false);
  const thetaLeaf = leaf(Float64Array.from(thetaValues), 1, thetaValues.length, false);
  const u = uJet(problem, cfg.method, L, w, thetaLeaf, points, true).u.value;
  return Array.from({ length: points.length }, (_, i) => u.data[u.rows === 1 ? 0 : i]);
}

/** torch.optim.Adam (betas 0.9, 0.999, eps 1e-8, no weight decay), in the same arithmetic. */
export class Adam {
  constructor(lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8) {
    Object.assign(this, { lr, beta1, beta2, eps, t: 0, m: {}, v: {} });
  }

  step(params, grads) {
    this.t += 1;
    const { beta1, beta2, eps, t } = this;
    const bc1 = 1 - beta1 ** t, bc2 = Math.sqrt(1 - beta2 ** t), stepSize = this.lr / bc1;
    for (const name of Object.keys(params)) {
      const p = params[name], g = grads[name];
      const m = (this.m[name] ??= new Float64Array(p.length));
      const v = (this.v[name] ??= new Float64Array(p.length));
      for (let k = 0; k < p.length; k++) {
        m[k] += (g[k] - m[k]) * (1 - beta1);
        v[k] = v[k] * beta2 + (1 - beta2) * g[k] * g[k];
        p[k] -= (stepSize * m[k]) / (Math.sqrt(v[k]) / bc2 + eps);
      }
    }
  }
}

/** Synthetic data: the exact solution at the true θ plus Gaussian noise (seeded). */
export function makeData(problemName, nData, noise, thetaTrue, seed = 1) {
  const problem = PROBLEMS[problemName];
  const points = grid(problem.coords.length, nData);
  const exact = problem.exact(thetaTrue, points);
  const gauss = normal(rng(seed));
  return { points, values: exact.map((v) => v + noise * gauss()) };
}

/** The data loss of the exact solution at θ: the landscape the upper level descends. */
export function exactDataLoss(problemName, theta, data) {
  const u = PROBLEMS[problemName].exact(theta, data.points);
  return u.reduce((s, v, i) => s + (v - data.values[i]) ** 2, 0) / u.length;
}

/** A whole training run: the network, θ, both optimisers and the history. */
export class Trainer {
  constructor(cfg) {
    this.cfg = { ...cfg };
    const problem = PROBLEMS[cfg.problem];
    this.problem = problem;
    this.weights = initWeights({
      nCoords: problem.coords.length, nParams: cfg.method === "bilo" ? problem.params.length : 0,
      width: cfg.width, depth: cfg.depth, seed: cfg.seed ?? 0,
    });
    this.theta = Float64Array.from(cfg.thetaInit);
    this.colloc = grid(problem.coords.length, cfg.nRes);
    this.data = makeData(cfg.problem, cfg.nData, cfg.noise, cfg.thetaTrue, (cfg.seed ?? 0) + 1);
    this.optW = new Adam(cfg.lrW);
    this.optTheta = new Adam(cfg.lrTheta);
    this.steps = 0;
    this.history = [];
  }

  config(mode) {
    return {
      ...this.cfg, mode, colloc: this.colloc, dataPoints: this.data.points,
      dataValues: this.data.values,
    };
  }

  /** One step in `mode` ("pretrain" or "finetune"); returns the losses before it. */
  step(mode) {
    const out = evaluate(this.config(mode), this.weights, this.theta);
    this.optW.step(this.weights.values, out.gradW);
    if (mode === "finetune") {
      this.optTheta.step({ theta: this.theta }, { theta: out.gradTheta });
      this.problem.lower.forEach((lo, j) => { this.theta[j] = Math.max(this.theta[j], lo); });
    }
    this.steps += 1;
    this.history.push({ step: this.steps, mode, ...out.losses, theta: Array.from(this.theta) });
    return out.losses;
  }

  predict(points, theta = this.theta) { return predict(this.cfg, this.weights, theta, points); }
}
