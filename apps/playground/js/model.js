// The network of bilo/network.py's MLP: u(coords, θ) = L_out ∘ tanh ∘ ... ∘ tanh ∘ L_1.
// L_1 = W_x coords + R θ + b with R fixed (not trained); hidden layers and L_out are torch's
// nn.Linear (weight out x in, bias). `depth` counts the tanh layers. PINN: no θ input.

import { Jet } from "./jet.js";
import { add, column, leaf, linear } from "./tape.js";

/** mulberry32: a small seeded generator of uniform numbers in [0, 1). */
export function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal numbers from a uniform generator (Box-Muller). */
export function normal(uniform) {
  return () => {
    const u = 1 - uniform(), v = uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

// the trainable parameters, in the order and with the names of torch's named_parameters()
export function parameterNames(depth) {
  const names = ["W_x", "b"];
  for (let i = 0; i < depth - 1; i++) names.push(`hidden.${i}.weight`, `hidden.${i}.bias`);
  names.push("out.weight", "out.bias");
  return names;
}

/** New weights, initialised as torch does (uniform in ±1/√fan-in). */
export function initWeights({ nCoords, nParams, width, depth, seed = 0 }) {
  const uniform = rng(seed);
  const fill = (n, bound) => Float64Array.from({ length: n }, () => (2 * uniform() - 1) * bound);
  const first = 1 / Math.sqrt(nCoords + nParams), inner = 1 / Math.sqrt(width);
  const w = { nCoords, nParams, width, depth, shapes: {}, values: {} };
  const put = (name, rows, cols, bound) => {
    w.shapes[name] = [rows, cols];
    w.values[name] = fill(rows * cols, bound);
  };
  put("W_x", width, nCoords, first);
  put("b", 1, width, first);
  w.R = { shape: [width, nParams], values: fill(width * nParams, first) };
  for (let i = 0; i < depth - 1; i++) {
    put(`hidden.${i}.weight`, width, width, inner);
    put(`hidden.${i}.bias`, 1, width, inner);
  }
  put("out.weight", 1, width, inner);
  put("out.bias", 1, 1, inner);
  return w;
}

/** Weights from the JSON the tests export from torch (nested lists, torch's shapes). */
export function weightsFromJSON(json) {
  const flat = (x) => Float64Array.from(x.flat(Infinity));
  const W_x = json["W_x"], width = W_x.length, nCoords = W_x[0].length;
  const R = json["R"] ?? [];
  const nParams = R.length ? R[0].length : 0;
  const depth = Object.keys(json).filter((k) => /^hidden\.\d+\.weight$/.test(k)).length + 1;
  const w = { nCoords, nParams, width, depth, shapes: {}, values: {} };
  for (const name of parameterNames(depth)) {
    const value = json[name];
    const rows = Array.isArray(value[0]) ? value.length : 1;
    const cols = Array.isArray(value[0]) ? value[0].length : value.length;
    w.shapes[name] = name === "b" || name.endsWith(".bias") ? [1, rows * cols] : [rows, cols];
    w.values[name] = flat(value);
  }
  w.R = { shape: [width, nParams], values: flat(R) };
  return w;
}

export function weightsToJSON(w) {
  const out = {};
  const nest = (v, rows, cols) => Array.from({ length: rows }, (_, i) => Array.from(
    v.subarray(i * cols, (i + 1) * cols)));
  for (const name of parameterNames(w.depth)) {
    const [rows, cols] = w.shapes[name];
    out[name] = name === "b" || name.endsWith(".bias") ? Array.from(w.values[name])
      : nest(w.values[name], rows, cols);
  }
  out.R = nest(w.R.values, w.R.shape[0], w.R.shape[1]);
  return out;
}

/** Leaves on the tape for the weights (sharing their arrays). */
export function weightLeaves(w, needsGrad = true) {
  const leaves = {};
  for (const name of parameterNames(w.depth)) {
    const [rows, cols] = w.shapes[name];
    leaves[name] = leaf(w.values[name], rows, cols, needsGrad);
  }
  leaves.R = leaf(w.R.values, w.R.shape[0], w.R.shape[1], false);
  return leaves;
}

/** The network's jet at points. `coordJets` / `paramJets`: the input jets (one per coordinate
 * and one per network parameter input, in order), `theta`: the 1 x nParams tensor of θ's
 * values, `points`: the N x nCoords tensor of the coordinates. The first layer's derivative
 * in a coordinate (parameter) is the constant column of W_x (R); its higher ones vanish. */
export function networkJet(L, w, channels, points, theta, coordNames, paramNames) {
  let z = linear(points, L["W_x"]);
  if (w.nParams) z = add(z, linear(theta, L.R)); // R θ: 1 x width, the same for every point
  const jet = new Jet(channels, channels.keys.map(() => null));
  jet.parts[0] = add(z, L.b);
  const single = (name) => channels.vars.map((v) => (v === name ? 1 : 0)).join(",");
  coordNames.forEach((name, k) => {
    if (channels.index.has(single(name))) jet.parts[channels.of([name])] = column(L["W_x"], k);
  });
  paramNames.forEach((name, j) => {
    if (channels.index.has(single(name))) jet.parts[channels.of([name])] = column(L.R, j);
  });
  let h = jet.tanh();
  for (let i = 0; i < w.depth - 1; i++) {
    h = h.linear(L[`hidden.${i}.weight`]).addBias(L[`hidden.${i}.bias`]).tanh();
  }
  return h.linear(L["out.weight"]).addBias(L["out.bias"]);
}
