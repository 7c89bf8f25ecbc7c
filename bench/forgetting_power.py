"""Power of the forgetting check: how often `drop_flagged` (the paired-bootstrap rule the evaluation applies)
flags a true accuracy drop on a multiple-choice set of n questions, by simulation of the paired design.

    python -m bench.forgetting_power --n 508 --base-accuracy 0.40 --drop 0.05

Each simulated question is answered by the base and the fine-tuned model. Only the questions where the two
disagree (one right, the other wrong) move the paired difference, so what decides the power besides n is the
discordance: the share of questions whose correctness changes with fine-tuning. A true drop D with
discordance d means P(base right, tuned wrong) = (d + D) / 2 and P(base wrong, tuned right) = (d − D) / 2;
the base accuracy only bounds which (d, D) are possible. Prints P(flag) for the drop and for no drop (the
false-alarm rate) at each discordance. `--lower-bound-rule` applies the rejected alternative instead (flag when
the CI's lower bound is below −max_drop), to show its false alarms."""

from __future__ import annotations

import argparse

import numpy as np

from tunewise.evaluate.compare import paired_bootstrap
from tunewise.evaluate.forgetting import drop_flagged


def simulate(n: int, base_accuracy: float, drop: float, discordance: float, max_drop: float, sims: int,
             seed: int, lower_bound_rule: bool = False) -> float:
    """Share of `sims` simulated sets of `n` questions on which the rule flags forgetting."""
    p10, p01 = (discordance + drop) / 2, (discordance - drop) / 2  # base right & tuned wrong, and the reverse
    p11, p00 = base_accuracy - p10, 1 - base_accuracy - p01
    if min(p10, p01, p11, p00) < 0:
        raise ValueError(f"discordance {discordance} and drop {drop} are impossible at base accuracy "
                         f"{base_accuracy}")
    rng = np.random.default_rng(seed)
    flagged = 0
    for i in range(sims):
        cells = rng.choice(4, size=n, p=[p11, p10, p01, p00])
        base = np.isin(cells, (0, 1)).astype(float)
        tuned = np.isin(cells, (0, 2)).astype(float)
        ci = paired_bootstrap(tuned, base, seed=i)["ci"]
        flagged += ci[0] < -max_drop if lower_bound_rule else drop_flagged(base.mean() - tuned.mean(), ci, max_drop)
    return flagged / sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=508, help="questions in the set")
    ap.add_argument("--base-accuracy", type=float, default=0.40)
    ap.add_argument("--drop", type=float, default=0.05, help="true accuracy drop (0.05 = 5 points)")
    ap.add_argument("--max-drop", type=float, default=0.02, help="eval.forgetting.max_drop")
    ap.add_argument("--discordance", type=float, nargs="+", default=[0.10, 0.15, 0.20, 0.30])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lower-bound-rule", action="store_true", help="flag when the CI's lower bound < -max_drop")
    a = ap.parse_args()
    rule = "lower bound < -max_drop" if a.lower_bound_rule else "drop_flagged"
    print(f"n={a.n}, base accuracy {a.base_accuracy}, true drop {a.drop}, max_drop {a.max_drop}, rule {rule}, "
          f"{a.sims} simulations each")
    print(f"| discordance | P(flag), {a.drop:.0%} drop | P(flag), no drop |")
    print("|---|---|---|")
    for d in a.discordance:
        power = simulate(a.n, a.base_accuracy, a.drop, d, a.max_drop, a.sims, a.seed, a.lower_bound_rule)
        false_alarm = simulate(a.n, a.base_accuracy, 0.0, d, a.max_drop, a.sims, a.seed + 1, a.lower_bound_rule)
        print(f"| {d:.2f} | {power:.3f} | {false_alarm:.3f} |")


if __name__ == "__main__":
    main()
