// The small API the tests drive (window.playgroundTest): the engine on given weights.

import { parameterNames, weightsFromJSON, weightsToJSON } from "./model.js";
import { PROBLEMS } from "./problems.js";
import { Adam, evaluate } from "./trainer.js";

const plain = (grads) => Object.fromEntries(Object.entries(grads).map(([k, v]) => [k, Array.from(v)]));

export const engineAPI = {
  /** Losses and gradients at (weights, θ): {losses, gradW: {name: [...]}, gradTheta: [...]}. */
  evaluate(cfg, weightsJSON, theta) {
    const out = evaluate(cfg, weightsFromJSON(weightsJSON), theta);
    return { losses: out.losses, gradW: plain(out.gradW), gradTheta: Array.from(out.gradTheta) };
  },

  /** `steps` steps of `cfg.mode` from (weights, θ) with fresh Adam optimisers (lrW, lrTheta):
   * the weights (flattened, per name) and θ after them. */
  train(cfg, weightsJSON, theta, steps) {
    const w = weightsFromJSON(weightsJSON), th = Float64Array.from(theta);
    const optW = new Adam(cfg.lrW), optTheta = new Adam(cfg.lrTheta);
    const lower = PROBLEMS[cfg.problem].lower;
    for (let s = 0; s < steps; s++) {
      const out = evaluate(cfg, w, th);
      optW.step(w.values, out.gradW);
      if (cfg.mode === "finetune") {
        optTheta.step({ theta: th }, { theta: out.gradTheta });
        lower.forEach((lo, j) => { th[j] = Math.max(th[j], lo); });
      }
    }
    const weights = Object.fromEntries(parameterNames(w.depth).map((n) => [n, Array.from(w.values[n])]));
    return { weights, theta: Array.from(th), json: weightsToJSON(w) };
  },
};
