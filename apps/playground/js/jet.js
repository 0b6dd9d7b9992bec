// Truncated Taylor jets over the tape (forward mode inside reverse mode), as bilo/jet.py.
//
// A jet holds, for each multi-index α of a fixed downward-closed set (the "channels"), the
// partial derivative ∂^α f as a Tensor, or null where it is identically zero. Variables are
// named (["t", "a"], ["x", "t", "D", "rho"]); a multi-index is a vector of counts per variable.
// Products use the Leibniz rule ∂^α(fg) = Σ_{β≤α} C(α,β) ∂^β f ∂^{α-β} g; tanh uses
// tanh' = 1 - tanh², differentiated with the same rule, so every channel is an expression in the
// tape's elementwise operations and reverse mode gives its gradient w.r.t. the weights and θ.

import { add, addScalar, linear, mul, scalar, scale, sub, tanh } from "./tape.js";

const keyOf = (counts) => counts.join(",");

function binom(n, k) {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return r;
}

/** Every β ≤ α (componentwise). */
function below(alpha) {
  let out = [[]];
  for (const a of alpha) {
    const next = [];
    for (const prefix of out) for (let b = 0; b <= a; b++) next.push([...prefix, b]);
    out = next;
  }
  return out;
}

export class Channels {
  /** `vars`: variable names; `wanted`: multi-indices as lists of names, e.g. [[], ["t"],
   * ["x", "x", "D"]]. The set is closed under taking sub-multi-indices. */
  constructor(vars, wanted) {
    this.vars = vars;
    const seen = new Map();
    for (const names of [[], ...wanted]) {
      const counts = vars.map((v) => names.filter((n) => n === v).length);
      if (names.some((n) => !vars.includes(n))) throw new Error(`unknown variable in ${names}`);
      for (const beta of below(counts)) seen.set(keyOf(beta), beta);
    }
    const order = (c) => c.reduce((s, x) => s + x, 0);
    this.counts = [...seen.values()].sort((p, q) => order(p) - order(q)
      || keyOf(p).localeCompare(keyOf(q)));
    this.keys = this.counts.map(keyOf);
    this.orders = this.counts.map(order);
    this.index = new Map(this.keys.map((k, i) => [k, i]));
    // Leibniz splits of each channel: [coefficient, index of β, index of α - β]
    this.splits = this.counts.map((alpha) => below(alpha).map((beta) => [
      beta.reduce((c, b, i) => c * binom(alpha[i], b), 1),
      this.index.get(keyOf(beta)),
      this.index.get(keyOf(alpha.map((a, i) => a - beta[i]))),
    ]));
  }

  /** The channel index of a multi-index given by names (e.g. ["x", "x"]). */
  of(names) {
    const k = keyOf(this.vars.map((v) => names.filter((n) => n === v).length));
    if (!this.index.has(k)) throw new Error(`channel ${names} not tracked`);
    return this.index.get(k);
  }
}

export class Jet {
  constructor(channels, parts) {
    this.ch = channels;
    this.parts = parts; // Tensor or null per channel
  }

  static constant(channels, value) {
    const parts = channels.keys.map(() => null);
    parts[0] = typeof value === "number" ? scalar(value) : value;
    return new Jet(channels, parts);
  }

  /** The variable `name` with the given value (a Tensor): ∂_name = 1. */
  static variable(channels, name, value) {
    const jet = Jet.constant(channels, value);
    jet.parts[channels.of([name])] = scalar(1);
    return jet;
  }

  get value() { return this.parts[0]; }

  d(...names) { return this.parts[this.ch.of(names)]; }

  /** The jet of ∂_names f: its channel α is f's channel α + names where that is tracked, null
   * (unknown) elsewhere. The channels a residual reads (the value, ∂θ) are exact as long as f
   * tracks them shifted by `names`, which the residual's keys ensure. */
  deriv(...names) {
    const ch = this.ch, shift = ch.vars.map((v) => names.filter((n) => n === v).length);
    return new Jet(ch, ch.counts.map((alpha) => {
      const k = keyOf(alpha.map((a, i) => a + shift[i]));
      return ch.index.has(k) ? this.parts[ch.index.get(k)] : null;
    }));
  }

  add(other) {
    if (typeof other === "number") {
      const parts = [...this.parts];
      parts[0] = addScalar(parts[0], other);
      return new Jet(this.ch, parts);
    }
    return new Jet(this.ch, this.parts.map((p, i) => {
      const q = other.parts[i];
      if (!p) return q;
      if (!q) return p;
      return add(p, q);
    }));
  }

  sub(other) {
    if (typeof other === "number") return this.add(-other);
    return new Jet(this.ch, this.parts.map((p, i) => {
      const q = other.parts[i];
      if (!q) return p;
      if (!p) return scale(q, -1);
      return sub(p, q);
    }));
  }

  scale(c) { return new Jet(this.ch, this.parts.map((p) => (p ? scale(p, c) : null))); }

  /** c - this, for a number c. */
  rsub(c) { return this.scale(-1).add(c); }

  mul(other) {
    if (typeof other === "number") return this.scale(other);
    const parts = this.ch.splits.map((terms) => {
      let acc = null;
      for (const [coef, b, r] of terms) {
        const p = this.parts[b], q = other.parts[r];
        if (!p || !q) continue;
        let term = mul(p, q);
        if (coef !== 1) term = scale(term, coef);
        acc = acc ? add(acc, term) : term;
      }
      return acc;
    });
    return new Jet(this.ch, parts);
  }

  /** tanh of the jet: Y = tanh(X), ∂_v Y = S ∂_v X with S = 1 - Y², channel by channel in
   * increasing order (S needs Y's channels of lower order only). */
  tanh() {
    const ch = this.ch, n = ch.keys.length;
    const Y = new Array(n).fill(null), S = new Array(n).fill(null);
    Y[0] = tanh(this.parts[0]);
    const sq = (i) => { // ∂^γ (Y²) from Y's channels
      let acc = null;
      for (const [coef, b, r] of ch.splits[i]) {
        if (!Y[b] || !Y[r]) continue;
        let term = mul(Y[b], Y[r]);
        if (coef !== 1) term = scale(term, coef);
        acc = acc ? add(acc, term) : term;
      }
      return acc;
    };
    let sDone = -1;
    for (let i = 1; i < n; i++) {
      const order = ch.orders[i];
      // S on every channel of order < order
      while (sDone + 1 < n && ch.orders[sDone + 1] < order) {
        sDone += 1;
        const y2 = sq(sDone);
        S[sDone] = sDone === 0 ? addScalar(scale(y2, -1), 1) : (y2 ? scale(y2, -1) : null);
      }
      const alpha = ch.counts[i];
      const v = alpha.findIndex((c) => c > 0);
      const beta = alpha.map((c, j) => (j === v ? c - 1 : c));
      // ∂^α Y = Σ_{γ≤β} C(β,γ) ∂^γ S ∂^{β-γ+e_v} X
      let acc = null;
      for (const gamma of below(beta)) {
        const coef = gamma.reduce((c, g, j) => c * binom(beta[j], g), 1);
        const s = S[ch.index.get(keyOf(gamma))];
        const rest = beta.map((b, j) => b - gamma[j] + (j === v ? 1 : 0));
        const x = this.parts[ch.index.get(keyOf(rest))];
        if (!s || !x) continue;
        let term = mul(s, x);
        if (coef !== 1) term = scale(term, coef);
        acc = acc ? add(acc, term) : term;
      }
      Y[i] = acc;
    }
    return new Jet(ch, Y);
  }

  /** Every channel times W^T (a linear layer without bias). */
  linear(W) { return new Jet(this.ch, this.parts.map((p) => (p ? linear(p, W) : null))); }

  /** Adds a bias row (1 x m) to the value channel. */
  addBias(b) {
    const parts = [...this.parts];
    parts[0] = add(parts[0], b);
    return new Jet(this.ch, parts);
  }
}
