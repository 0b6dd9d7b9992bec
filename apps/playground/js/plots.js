// Small canvas plots: lines and points on linear or log axes, with a filled contour map.

const PAD = { left: 58, right: 12, top: 26, bottom: 40 };
export const COLORS = {
  nn: "#1f6feb", exact: "#222", data: "#d9480f", res: "#1f6feb", rgrad: "#7b2cbf",
  dat: "#d9480f", minus: "#2b8a3e", plus: "#c2255c", path: "#fff", truth: "#ffd43b",
};

function niceTicks(lo, hi, n = 5) {
  const span = hi - lo || 1, raw = span / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= n) ?? 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12 * span; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

const fmt = (v) => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(0) : `${+v.toPrecision(4)}`);

export function extent(values, pad = 0.05, log = false) {
  const vs = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  if (!vs.length) return log ? [1e-6, 1] : [0, 1];
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (log) return [10 ** Math.floor(Math.log10(lo)), 10 ** Math.ceil(Math.log10(hi))];
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

/** Draws axes and series. opts: {title, xlabel, ylabel, xlim, ylim, logy, series: [{x, y,
 * color, width, dash, points, label}], background(ctx, sx, sy) (drawn under the series)}. */
export function plot(canvas, opts) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  const [x0, x1] = opts.xlim, logy = !!opts.logy;
  const [y0, y1] = logy ? opts.ylim.map(Math.log10) : opts.ylim;
  const pw = W - PAD.left - PAD.right, ph = H - PAD.top - PAD.bottom;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y) => PAD.top + (1 - ((logy ? Math.log10(y) : y) - y0) / (y1 - y0)) * ph;
  if (opts.background) opts.background(ctx, sx, sy, { x0, x1, y0: opts.ylim[0], y1: opts.ylim[1] });
  // axes and ticks
  ctx.strokeStyle = "#888";
  ctx.lineWidth = 1;
  ctx.strokeRect(PAD.left, PAD.top, pw, ph);
  ctx.fillStyle = "#333";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "center";
  for (const t of niceTicks(x0, x1)) {
    ctx.fillText(fmt(t), sx(t), PAD.top + ph + 14);
    ctx.beginPath(); ctx.moveTo(sx(t), PAD.top + ph); ctx.lineTo(sx(t), PAD.top + ph + 4); ctx.stroke();
  }
  ctx.textAlign = "right";
  const yt = logy ? niceTicks(y0, y1).filter(Number.isInteger).map((e) => 10 ** e) : niceTicks(y0, y1);
  for (const t of yt) {
    ctx.fillText(logy ? `1e${Math.round(Math.log10(t))}` : fmt(t), PAD.left - 6, sy(t) + 4);
    ctx.beginPath(); ctx.moveTo(PAD.left - 4, sy(t)); ctx.lineTo(PAD.left, sy(t)); ctx.stroke();
  }
  ctx.textAlign = "center";
  if (opts.xlabel) ctx.fillText(opts.xlabel, PAD.left + pw / 2, H - 8);
  if (opts.title) { ctx.font = "bold 12px system-ui, sans-serif"; ctx.fillText(opts.title, W / 2, 16); }
  if (opts.ylabel) {
    ctx.save(); ctx.translate(12, PAD.top + ph / 2); ctx.rotate(-Math.PI / 2);
    ctx.font = "11px system-ui, sans-serif"; ctx.fillText(opts.ylabel, 0, 0); ctx.restore();
  }
  // series, clipped to the plot area
  ctx.save();
  ctx.beginPath(); ctx.rect(PAD.left, PAD.top, pw, ph); ctx.clip();
  for (const s of opts.series) {
    ctx.strokeStyle = ctx.fillStyle = s.color ?? "#000";
    ctx.lineWidth = s.width ?? 1.8;
    ctx.setLineDash(s.dash ?? []);
    const ok = (i) => Number.isFinite(s.y[i]) && (!logy || s.y[i] > 0);
    if (s.points) {
      for (let i = 0; i < s.x.length; i++) {
        if (!ok(i)) continue;
        ctx.beginPath(); ctx.arc(sx(s.x[i]), sy(s.y[i]), s.radius ?? 3, 0, 2 * Math.PI);
        if (s.hollow) ctx.stroke(); else ctx.fill();
      }
    } else {
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < s.x.length; i++) {
        if (!ok(i)) { pen = false; continue; }
        if (pen) ctx.lineTo(sx(s.x[i]), sy(s.y[i])); else ctx.moveTo(sx(s.x[i]), sy(s.y[i]));
        pen = true;
      }
      ctx.stroke();
    }
  }
  ctx.setLineDash([]);
  ctx.restore();
  // legend
  const labelled = opts.series.filter((s) => s.label);
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left";
  let lx = PAD.left + 8, ly = PAD.top + 14;
  for (const s of labelled) {
    ctx.fillStyle = "rgba(255,255,255,0.8)";
    ctx.fillRect(lx - 4, ly - 10, ctx.measureText(s.label).width + 30, 14);
    ctx.strokeStyle = ctx.fillStyle = s.color ?? "#000";
    if (s.points) { ctx.beginPath(); ctx.arc(lx + 8, ly - 4, 3, 0, 2 * Math.PI); ctx.fill(); } else {
      ctx.setLineDash(s.dash ?? []); ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(lx, ly - 4); ctx.lineTo(lx + 18, ly - 4); ctx.stroke(); ctx.setLineDash([]);
    }
    ctx.fillStyle = "#222";
    ctx.fillText(s.label, lx + 22, ly);
    ly += 15;
  }
}

/** A filled contour map of log10(values) (rows over y, columns over x), in `levels` bands. */
export function contourBackground(xs, ys, values, levels = 12) {
  const logs = values.map((row) => row.map((v) => Math.log10(Math.max(v, 1e-300))));
  const flat = logs.flat(), lo = Math.min(...flat), hi = Math.max(...flat);
  return (ctx, sx, sy) => {
    for (let i = 0; i < ys.length; i++) {
      for (let j = 0; j < xs.length; j++) {
        const band = Math.floor(((logs[i][j] - lo) / (hi - lo + 1e-12)) * levels) / levels;
        ctx.fillStyle = viridis(band);
        const xa = sx(j ? (xs[j - 1] + xs[j]) / 2 : xs[0]), xb = sx(j < xs.length - 1 ? (xs[j] + xs[j + 1]) / 2 : xs[j]);
        const ya = sy(i ? (ys[i - 1] + ys[i]) / 2 : ys[0]), yb = sy(i < ys.length - 1 ? (ys[i] + ys[i + 1]) / 2 : ys[i]);
        ctx.fillRect(Math.min(xa, xb), Math.min(ya, yb), Math.abs(xb - xa) + 0.5, Math.abs(yb - ya) + 0.5);
      }
    }
  };
}

function viridis(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const f = Math.min(Math.max(t, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(f), stops.length - 2), w = f - i;
  const c = stops[i].map((v, k) => Math.round(v + w * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** How many pixels of the canvas differ from white (a drawn plot has thousands). */
export function ink(canvas) {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let k = 0; k < data.length; k += 4) if (data[k] < 250 || data[k + 1] < 250 || data[k + 2] < 250) n++;
  return n;
}
