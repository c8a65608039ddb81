"""Where each learning run's advantage mass went, and how its policy drifted, read from its console logs.

    python bench/advantage_mass.py LOG... [--out FILE]
    python bench/advantage_mass.py --pair BASE_LOG NEW_LOG [--out FILE]

Per run (a log, gzipped or not): the mean over iterations of the share of Σ|A| on step samples with A < 0
(`advantage/negative_abs_share`, logged by our trainer), the mean share of Σ|A| in groups without a win
(`advantage/no_success_abs_share`: there only the invalid-action penalty sets the advantages), and the first and
second half's means of the update's token entropy, the training rollouts' success and their inadmissible-action
rate. Across runs: the rank correlation of the negative share with the entropy's growth (second half over first),
and of the no-win share with the success's change (second half minus first). An episode advantage counted once
per trajectory but given to each of its steps lets failures that run to the step limit outweigh shorter wins
(docs/gigpo.md, `algorithm.compute_mean_std_cross_steps`); this is how that shows in finished runs.

`--pair` compares two runs of one seed that differ in one setting (the same games in the same order, `data.seed`):
iteration by iteration from the first that follows an update (2), NEW minus BASE of the negative share and of each
drift metric, their mean and in how many iterations NEW was at or above BASE.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from molmo_agent.integrations.verl.eval_report import logged_steps, read_console_log

NEGATIVE_SHARE = "advantage/negative_abs_share"
NO_WIN_SHARE = "advantage/no_success_abs_share"
DRIFTS = {"entropy": "actor/entropy", "success": "env/success_rate",
          "inadmissible": "env/inadmissible_action_rate"}
FIRST_TRAINED_ITERATION = 2  # iteration 1's rollouts come from the starting weights in both runs


def training_iterations(log: str) -> dict[int, dict[str, float]]:
    """Iteration -> metrics of the iterations of `log` that logged an update."""
    return {step: metrics for step, metrics in logged_steps(log).items()
            if step > 0 and DRIFTS["entropy"] in metrics}


def run_drift(log: str) -> dict[str, Any]:
    """{"iterations", "negative_share", "no_win_share", <drift>: [first half's mean, second half's mean] or None}
    of the training iterations of `log` (those that logged an update); the middle iteration of an odd count goes to
    the second."""
    iterations = [metrics for _, metrics in sorted(training_iterations(log).items())]
    if len(iterations) < 2:
        raise ValueError(f"a drift needs two training iterations, the log holds {len(iterations)}")
    half = len(iterations) // 2
    row: dict[str, Any] = {"iterations": len(iterations),
                           "negative_share": _mean([m.get(NEGATIVE_SHARE) for m in iterations]),
                           "no_win_share": _mean([m.get(NO_WIN_SHARE) for m in iterations])}
    for name, key in DRIFTS.items():
        first, second = _mean([m.get(key) for m in iterations[:half]]), _mean([m.get(key) for m in iterations[half:]])
        row[name] = None if first is None or second is None else [first, second]
    return row


def paired_difference(base_log: str, new_log: str) -> dict[str, Any]:
    """{"pairs": [iterations], <metric>: {"mean", "at_or_above"} of NEW minus BASE} over the iterations from
    FIRST_TRAINED_ITERATION that both logs trained, for the negative share and each drift metric both logged."""
    base, new = training_iterations(base_log), training_iterations(new_log)
    pairs = sorted(i for i in base.keys() & new.keys() if i >= FIRST_TRAINED_ITERATION)
    if not pairs:
        raise ValueError("the two runs share no training iteration from the second on")
    result: dict[str, Any] = {"pairs": pairs}
    for name, key in {"negative_share": NEGATIVE_SHARE, **DRIFTS}.items():
        differences = [new[i][key] - base[i][key] for i in pairs if key in new[i] and key in base[i]]
        if differences:
            result[name] = {"mean": float(np.mean(differences)),
                            "at_or_above": f"{sum(d >= 0 for d in differences)} of {len(differences)}"}
    return result


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's ρ of two equally long lists (ties ranked by order)."""
    ranks = [np.argsort(np.argsort(values)) for values in (x, y)]
    return float(np.corrcoef(*ranks)[0, 1])


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def drift_table(logs: list[Path]) -> dict[str, Any]:
    """The drift of each run of `logs` and, across runs, the negative share's rank correlation with the entropy's
    growth and the no-win share's with the success's change; printed as a table too."""
    if not logs:
        raise SystemExit("advantage_mass: give console logs, or --pair BASE_LOG NEW_LOG")
    runs = {path.name: run_drift(read_console_log(path)) for path in logs}
    with_share = [row for row in runs.values() if row["negative_share"] is not None]
    growth = [row["entropy"][1] / row["entropy"][0] for row in with_share]
    result = {"runs": runs,
              "negative_share_vs_entropy_growth_spearman":
                  rank_correlation([row["negative_share"] for row in with_share], growth) if len(with_share) > 2
                  else None}
    with_no_win = [row for row in runs.values() if row["no_win_share"] is not None and row["success"]]
    result["no_win_share_vs_success_change_spearman"] = rank_correlation(
        [row["no_win_share"] for row in with_no_win],
        [row["success"][1] - row["success"][0] for row in with_no_win]) if len(with_no_win) > 2 else None
    for name, row in runs.items():
        drift = "  ".join(f"{key} {row[key][0]:.3f} -> {row[key][1]:.3f}" for key in DRIFTS if row[key])
        share, no_win = ("-" if row[key] is None else f"{row[key]:.2f}" for key in ("negative_share", "no_win_share"))
        print(f"{name}: {row['iterations']} iterations, negative share {share}, no-win share {no_win}  {drift}")
    print(f"Spearman(negative share, entropy growth) = {result['negative_share_vs_entropy_growth_spearman']}")
    print(f"Spearman(no-win share, success change) = {result['no_win_share_vs_success_change_spearman']}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="*", type=Path, help="console logs of learning runs (verl's step lines)")
    parser.add_argument("--pair", nargs=2, type=Path, metavar=("BASE_LOG", "NEW_LOG"),
                        help="two runs of one seed that differ in one setting, compared iteration by iteration")
    parser.add_argument("--out", type=Path, help="the result file (JSON)")
    args = parser.parse_args(argv)
    result = {"bench": "advantage_mass", "command": "python bench/advantage_mass.py " + " ".join(sys.argv[1:])}
    if args.pair:
        result.update(base=args.pair[0].name, new=args.pair[1].name,
                      **paired_difference(*map(read_console_log, args.pair)))
        for name in ("negative_share", *DRIFTS):
            if name in result:
                print(f"{name}: new - base {result[name]['mean']:+.3f} (new at or above in "
                      f"{result[name]['at_or_above']} iterations)")
    else:
        result.update(drift_table(args.logs))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
