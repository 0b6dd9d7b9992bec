// The problems: their variables, output transform, residual (jets) and exact solution.
// Each mirrors the project's problem declaration (bilo/problems/logistic.py, fkpp.py).

import { Jet } from "./jet.js";
import { leaf } from "./tape.js";

export const PROBLEMS = {
  exponential: {
    label: "Exponential growth  u' = a u",
    coords: ["t"],
    params: ["a"],
    u0: 1,
    thetaInit: [0.5],
    thetaTrue: [1],
    lower: [1e-6],
    residualKeys: [[], ["t"]],
    output(net, c) { return c.t.mul(net).add(this.u0); },
    residual(u, c, th) { return u.deriv("t").sub(th.a.mul(u)); },
    exact(theta, points) {
      const [a] = theta;
      return points.map(([t]) => this.u0 * Math.exp(a * t));
    },
  },
  logistic: {
    label: "Logistic growth  u' = a u (1 - u)",
    coords: ["t"],
    params: ["a"],
    u0: 0.1,
    thetaInit: [1],
    thetaTrue: [2],
    lower: [1e-6],
    residualKeys: [[], ["t"]],
    output(net, c) { return c.t.mul(net).add(this.u0); },
    residual(u, c, th) { return u.deriv("t").sub(th.a.mul(u).mul(u.rsub(1))); },
    exact(theta, points) {
      const [a] = theta, u0 = this.u0;
      return points.map(([t]) => {
        const e = Math.exp(a * t);
        return (u0 * e) / (1 - u0 + u0 * e);
      });
    },
  },
  fkpp: {
    label: "Fisher-KPP  u_t = 0.01 D u_xx + ρ u (1 - u)",
    coords: ["x", "t"],
    params: ["D", "rho"],
    thetaInit: [1, 1],
    thetaTrue: [2, 2],
    lower: [1e-6, 1e-6],
    residualKeys: [[], ["t"], ["x", "x"]],
    // u = ½ sin²(πx) + N x (1 - x) t: the initial and boundary conditions hold for every N
    output(net, c) {
      const ch = net.ch, x = c.x.value.data, n = x.length;
      const g = Jet.constant(ch, 0); // ½ sin²(πx) and its x derivatives (no weights)
      const col = (f) => leafColumn(Float64Array.from(x, f), n);
      g.parts[0] = col((s) => 0.5 * Math.sin(Math.PI * s) ** 2);
      if (ch.index.has(single(ch, "x"))) g.parts[ch.of(["x"])] = col((s) => 0.5 * Math.PI * Math.sin(2 * Math.PI * s));
      if (ch.index.has(xx(ch))) g.parts[ch.of(["x", "x"])] = col((s) => Math.PI ** 2 * Math.cos(2 * Math.PI * s));
      return g.add(net.mul(c.x).mul(c.x.rsub(1)).mul(c.t));
    },
    residual(u, c, th) {
      return u.deriv("t").sub(th.D.mul(u.deriv("x", "x")).scale(0.01)).sub(th.rho.mul(u).mul(u.rsub(1)));
    },
    exact(theta, points) { return fkppAt(theta, points); },
  },
};

function single(ch, name) { return ch.vars.map((v) => (v === name ? 1 : 0)).join(","); }
function xx(ch) { return ch.vars.map((v) => (v === "x" ? 2 : 0)).join(","); }

function leafColumn(values, n) { return leaf(values, n, 1, false); }

// ---- Fisher-KPP reference: method of lines (2nd-order differences), classical RK4 -----------
// u is stored at FK_STEPS + 1 output times; each output interval takes as many RK4 substeps as
// the diffusion's stability needs (dt·4k ≤ 2, k = 0.01·D/dx²).
const FK_NX = 51, FK_STEPS = 200;
const fkCache = new Map();

/** u on the grid x_i = i/(nx-1) at t_n = n/steps: an array of time rows. */
export function solveFKPP(D, rho) {
  const key = `${D},${rho}`;
  if (fkCache.has(key)) return fkCache.get(key);
  const nx = FK_NX, dx = 1 / (nx - 1), k = (0.01 * D) / (dx * dx);
  const sub = Math.max(1, Math.ceil((4 * k) / (2 * FK_STEPS))), dt = 1 / (FK_STEPS * sub);
  let u = Float64Array.from({ length: nx }, (_, i) => 0.5 * Math.sin(Math.PI * i * dx) ** 2);
  const rows = [u.slice()];
  const k1 = new Float64Array(nx), k2 = new Float64Array(nx), k3 = new Float64Array(nx);
  const k4 = new Float64Array(nx), v = new Float64Array(nx);
  const f = (w, out) => {
    for (let i = 1; i < nx - 1; i++) out[i] = k * (w[i - 1] - 2 * w[i] + w[i + 1]) + rho * w[i] * (1 - w[i]);
  };
  for (let n = 0; n < FK_STEPS; n++) {
    for (let s = 0; s < sub; s++) {
      f(u, k1);
      for (let i = 0; i < nx; i++) v[i] = u[i] + 0.5 * dt * k1[i];
      f(v, k2);
      for (let i = 0; i < nx; i++) v[i] = u[i] + 0.5 * dt * k2[i];
      f(v, k3);
      for (let i = 0; i < nx; i++) v[i] = u[i] + dt * k3[i];
      f(v, k4);
      for (let i = 0; i < nx; i++) u[i] += (dt / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);
    }
    rows.push(u.slice());
  }
  if (fkCache.size >= 16) fkCache.delete(fkCache.keys().next().value);
  fkCache.set(key, rows);
  return rows;
}

/** The reference at points [x, t] (bilinear interpolation on the solver's grid). */
export function fkppAt([D, rho], points) {
  const rows = solveFKPP(D, rho);
  return points.map(([x, t]) => {
    const ft = Math.min(Math.max(t, 0), 1) * FK_STEPS, n = Math.min(Math.floor(ft), FK_STEPS - 1);
    const fx = Math.min(Math.max(x, 0), 1) * (FK_NX - 1), i = Math.min(Math.floor(fx), FK_NX - 2);
    const wt = ft - n, wx = fx - i;
    const at = (r) => (1 - wx) * rows[r][i] + wx * rows[r][i + 1];
    return (1 - wt) * at(n) + wt * at(n + 1);
  });
}
