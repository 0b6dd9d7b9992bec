// Reverse-mode automatic differentiation over small dense float64 matrices.
//
// Every operation creates a Tensor (rows x cols, row-major Float64Array) and, when one of its
// inputs needs a gradient, records a closure on the tape that pushes the output's gradient back
// to the inputs. `backward(loss)` runs the tape in reverse. Shapes broadcast like numpy for the
// two dimensions: a dimension of size 1 is repeated to match the other operand.

let tape = [];

export class Tensor {
  constructor(data, rows, cols, needsGrad = false) {
    if (data.length !== rows * cols) throw new Error(`tensor data ${data.length} != ${rows}x${cols}`);
    this.data = data;
    this.rows = rows;
    this.cols = cols;
    this.needsGrad = needsGrad;
    this.grad = null;
    this.back = null;
  }
  get size() { return this.data.length; }
  ensureGrad() {
    if (!this.grad) this.grad = new Float64Array(this.data.length);
    return this.grad;
  }
  item() { return this.data[0]; }
}

/** Start a new computation: forget the recorded operations. */
export function resetTape() { tape = []; }

/** A leaf: `needsGrad` leaves collect gradients in `.grad`. The data array is not copied. */
export function leaf(data, rows, cols, needsGrad = false) {
  const d = data instanceof Float64Array ? data : Float64Array.from(data);
  return new Tensor(d, rows, cols, needsGrad);
}

export function scalar(v) { return new Tensor(Float64Array.of(v), 1, 1, false); }

function record(out, inputs, back) {
  if (inputs.some((t) => t.needsGrad)) {
    out.needsGrad = true;
    out.back = back;
    tape.push(out);
  }
  return out;
}

function bshape(a, b) {
  const rows = Math.max(a.rows, b.rows), cols = Math.max(a.cols, b.cols);
  if ((a.rows !== rows && a.rows !== 1) || (b.rows !== rows && b.rows !== 1)
      || (a.cols !== cols && a.cols !== 1) || (b.cols !== cols && b.cols !== 1)) {
    throw new Error(`shapes ${a.rows}x${a.cols} and ${b.rows}x${b.cols} do not broadcast`);
  }
  return [rows, cols];
}

// index of element (i, j) of x inside a broadcast of shape rows x cols
function indexer(x) {
  const sr = x.rows === 1 ? 0 : x.cols, sc = x.cols === 1 ? 0 : 1;
  return [sr, sc];
}

// op: 0 add, 1 sub, 2 mul. Loops are written out per case (a closure call or a branch per
// element costs more than the arithmetic); broadcast operands advance with stride 0.
function binary(a, b, op) {
  const [rows, cols] = bshape(a, b);
  const n = rows * cols, out = new Float64Array(n);
  const A = a.data, B = b.data;
  const [ar, ac] = indexer(a), [br, bc] = indexer(b);
  const flat = a.size === n && b.size === n;
  if (flat) {
    if (op === 0) for (let k = 0; k < n; k++) out[k] = A[k] + B[k];
    else if (op === 1) for (let k = 0; k < n; k++) out[k] = A[k] - B[k];
    else for (let k = 0; k < n; k++) out[k] = A[k] * B[k];
  } else {
    for (let i = 0; i < rows; i++) {
      const k0 = i * cols;
      let ia = i * ar, ib = i * br;
      if (op === 0) for (let j = 0; j < cols; j++, ia += ac, ib += bc) out[k0 + j] = A[ia] + B[ib];
      else if (op === 1) for (let j = 0; j < cols; j++, ia += ac, ib += bc) out[k0 + j] = A[ia] - B[ib];
      else for (let j = 0; j < cols; j++, ia += ac, ib += bc) out[k0 + j] = A[ia] * B[ib];
    }
  }
  const res = new Tensor(out, rows, cols);
  return record(res, [a, b], () => {
    const g = res.grad;
    if (a.needsGrad) {
      const ga = a.ensureGrad();
      if (flat) {
        if (op === 2) for (let k = 0; k < n; k++) ga[k] += g[k] * B[k];
        else for (let k = 0; k < n; k++) ga[k] += g[k];
      } else {
        for (let i = 0; i < rows; i++) {
          const k0 = i * cols;
          let ia = i * ar, ib = i * br;
          if (op === 2) for (let j = 0; j < cols; j++, ia += ac, ib += bc) ga[ia] += g[k0 + j] * B[ib];
          else for (let j = 0; j < cols; j++, ia += ac) ga[ia] += g[k0 + j];
        }
      }
    }
    if (b.needsGrad) {
      const gb = b.ensureGrad();
      if (flat) {
        if (op === 2) for (let k = 0; k < n; k++) gb[k] += g[k] * A[k];
        else if (op === 1) for (let k = 0; k < n; k++) gb[k] -= g[k];
        else for (let k = 0; k < n; k++) gb[k] += g[k];
      } else {
        for (let i = 0; i < rows; i++) {
          const k0 = i * cols;
          let ia = i * ar, ib = i * br;
          if (op === 2) for (let j = 0; j < cols; j++, ia += ac, ib += bc) gb[ib] += g[k0 + j] * A[ia];
          else if (op === 1) for (let j = 0; j < cols; j++, ib += bc) gb[ib] -= g[k0 + j];
          else for (let j = 0; j < cols; j++, ib += bc) gb[ib] += g[k0 + j];
        }
      }
    }
  });
}

export function add(a, b) { return binary(a, b, 0); }

export function sub(a, b) { return binary(a, b, 1); }

export function mul(a, b) { return binary(a, b, 2); }

/** c * a for a number c. */
export function scale(a, c) {
  const out = new Float64Array(a.size);
  for (let k = 0; k < out.length; k++) out[k] = c * a.data[k];
  const res = new Tensor(out, a.rows, a.cols);
  return record(res, [a], () => {
    const ga = a.ensureGrad(), g = res.grad;
    for (let k = 0; k < g.length; k++) ga[k] += c * g[k];
  });
}

/** a + c for a number c. */
export function addScalar(a, c) {
  const out = new Float64Array(a.size);
  for (let k = 0; k < out.length; k++) out[k] = a.data[k] + c;
  const res = new Tensor(out, a.rows, a.cols);
  return record(res, [a], () => {
    const ga = a.ensureGrad(), g = res.grad;
    for (let k = 0; k < g.length; k++) ga[k] += g[k];
  });
}

export function tanh(a) {
  const out = new Float64Array(a.size);
  for (let k = 0; k < out.length; k++) out[k] = Math.tanh(a.data[k]);
  const res = new Tensor(out, a.rows, a.cols);
  return record(res, [a], () => {
    const ga = a.ensureGrad(), g = res.grad;
    for (let k = 0; k < g.length; k++) ga[k] += g[k] * (1 - out[k] * out[k]);
  });
}

/** h W^T: h (n x k), W (m x k) -> (n x m), as torch's nn.Linear without its bias. */
export function linear(h, W) {
  const n = h.rows, k = h.cols, m = W.rows;
  if (W.cols !== k) throw new Error(`linear: ${n}x${k} times (${m}x${W.cols})^T`);
  const H = h.data, w = W.data, out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    const hi = i * k;
    for (let o = 0; o < m; o++) {
      const wo = o * k;
      let s = 0;
      for (let p = 0; p < k; p++) s += H[hi + p] * w[wo + p];
      out[i * m + o] = s;
    }
  }
  const res = new Tensor(out, n, m);
  return record(res, [h, W], () => {
    const g = res.grad;
    if (h.needsGrad) { // gh = g W: inner products along rows of g and columns of W
      const gh = h.ensureGrad(), WT = transpose(w, m, k);
      for (let i = 0; i < n; i++) {
        const gi = i * m;
        for (let p = 0; p < k; p++) {
          const wp = p * m;
          let s = 0;
          for (let o = 0; o < m; o++) s += g[gi + o] * WT[wp + o];
          gh[i * k + p] += s;
        }
      }
    }
    if (W.needsGrad) { // gW = g^T h
      const gw = W.ensureGrad(), gT = transpose(g, n, m), HT = transpose(H, n, k);
      for (let o = 0; o < m; o++) {
        const go = o * n;
        for (let p = 0; p < k; p++) {
          const hp = p * n;
          let s = 0;
          for (let i = 0; i < n; i++) s += gT[go + i] * HT[hp + i];
          gw[o * k + p] += s;
        }
      }
    }
  });
}

function transpose(a, rows, cols) {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j];
  return out;
}

/** Column j of W (m x k) as a row (1 x m). */
export function column(W, j) {
  const m = W.rows, k = W.cols, out = new Float64Array(m);
  for (let o = 0; o < m; o++) out[o] = W.data[o * k + j];
  const res = new Tensor(out, 1, m);
  return record(res, [W], () => {
    const gw = W.ensureGrad(), g = res.grad;
    for (let o = 0; o < m; o++) gw[o * k + j] += g[o];
  });
}

/** Element k of a (flat index) as a 1 x 1 tensor. */
export function element(a, k) {
  const res = new Tensor(Float64Array.of(a.data[k]), 1, 1);
  return record(res, [a], () => { a.ensureGrad()[k] += res.grad[0]; });
}

/** The mean of a's elements (1 x 1). */
export function mean(a) {
  let s = 0;
  for (let k = 0; k < a.size; k++) s += a.data[k];
  const n = a.size;
  const res = new Tensor(Float64Array.of(s / n), 1, 1);
  return record(res, [a], () => {
    const ga = a.ensureGrad(), g = res.grad[0] / n;
    for (let k = 0; k < n; k++) ga[k] += g;
  });
}

/** mean(a²), the usual loss term. */
export function meanSquare(a) {
  let s = 0;
  for (let k = 0; k < a.size; k++) s += a.data[k] * a.data[k];
  const n = a.size;
  const res = new Tensor(Float64Array.of(s / n), 1, 1);
  return record(res, [a], () => {
    const ga = a.ensureGrad(), g = (2 * res.grad[0]) / n;
    for (let k = 0; k < n; k++) ga[k] += g * a.data[k];
  });
}

/** Gradients of the 1 x 1 tensor `loss` with respect to every leaf that needs one. Gradients
 * accumulate in `.grad`: call `zeroGrads(leaves)` between two calls. */
export function backward(loss) {
  for (const t of tape) t.grad = null;
  loss.ensureGrad()[0] = 1;
  for (let i = tape.length - 1; i >= 0; i--) {
    const t = tape[i];
    if (t.grad && t.back) t.back();
  }
}

export function zeroGrads(leaves) {
  for (const t of leaves) t.grad = null;
}
