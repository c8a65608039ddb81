"""bench/advantage_mass.py on console lines printed with verl's formatter."""
import json
import pathlib
import sys

import pytest

from verl.utils.logger.aggregate_logger import concat_dict_to_str

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import advantage_mass  # noqa: E402


def run_log(entropies: list[float], negative_shares: list[float | None], no_win_share: float | None = None,
            late_success: float = 0.3) -> str:
    """A run's step lines: its validation before training, then one line per iteration (success 0.5 at first,
    `late_success` from the third), the negative share left out where None, the no-win share where given."""
    lines = [concat_dict_to_str({"val-core/alfworld/valid_seen/acc/mean@1": 0.2}, step=0)]
    for step, (entropy, share) in enumerate(zip(entropies, negative_shares), start=1):
        metrics = {"actor/entropy": entropy, "env/success_rate": 0.5 if step < 3 else late_success}
        if share is not None:
            metrics["advantage/negative_abs_share"] = share
        if no_win_share is not None:
            metrics["advantage/no_success_abs_share"] = no_win_share
        lines += [concat_dict_to_str(metrics, step=step), "(TaskRunner pid=1) an unrelated line"]
    return "\n".join(lines)


def test_halves_and_share_of_one_run():
    row = advantage_mass.run_drift(run_log([0.1, 0.1, 0.2, 0.3, 0.4], [0.5, 0.6, None, 0.7, 0.8]))
    assert row["iterations"] == 5
    assert row["negative_share"] == pytest.approx(0.65)  # the iterations that logged it
    assert row["entropy"] == pytest.approx([0.1, 0.3])  # two iterations, then three
    assert row["success"] == pytest.approx([0.5, 0.3])
    assert row["inadmissible"] is None and row["no_win_share"] is None  # never logged


def test_a_run_without_two_updates_is_refused():
    with pytest.raises(ValueError, match="two training iterations, the log holds 1"):
        advantage_mass.run_drift(run_log([0.1], [0.5]))


def test_rank_correlation_of_share_and_entropy_growth(tmp_path, capsys):
    logs = []
    # the more of a run's mass sat in groups without a win, the more its success fell: ρ = -1
    for name, growth, share, no_win, late in [("a", 1.0, 0.55, 0.2, 0.6), ("b", 2.0, 0.6, 0.4, 0.5),
                                             ("c", 3.0, 0.7, 0.6, 0.3)]:
        logs.append(tmp_path / f"{name}.log")
        logs[-1].write_text(run_log([0.1, 0.1, 0.1 * growth, 0.1 * growth], [share] * 4, no_win, late))
    advantage_mass.main([*map(str, logs), "--out", str(tmp_path / "out.json")])
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["negative_share_vs_entropy_growth_spearman"] == pytest.approx(1.0)
    assert result["no_win_share_vs_success_change_spearman"] == pytest.approx(-1.0)
    assert result["runs"]["c.log"]["entropy"] == pytest.approx([0.1, 0.3])
    assert result["runs"]["c.log"]["no_win_share"] == pytest.approx(0.6)
    assert "c.log: 4 iterations, negative share 0.70, no-win share 0.60" in capsys.readouterr().out
    assert advantage_mass.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_a_pair_of_runs_compared_iteration_by_iteration_from_the_second(tmp_path, capsys):
    base, new = tmp_path / "base.log", tmp_path / "new.log"
    base.write_text(run_log([0.1, 0.1, 0.2, 0.3], [0.6, 0.6, 0.7, 0.7]))
    # one iteration fewer, entropy flat, negative share balanced: compared over iterations 2 and 3
    new.write_text(run_log([0.5, 0.1, 0.1], [0.5, 0.5, 0.5]))
    advantage_mass.main(["--pair", str(base), str(new), "--out", str(tmp_path / "pair.json")])
    result = json.loads((tmp_path / "pair.json").read_text())
    assert result["pairs"] == [2, 3] and (result["base"], result["new"]) == ("base.log", "new.log")
    assert result["negative_share"]["mean"] == pytest.approx(-0.15)
    assert result["entropy"] == {"mean": pytest.approx(-0.05), "at_or_above": "1 of 2"}
    assert result["success"] == {"mean": pytest.approx(0.0), "at_or_above": "2 of 2"}
    assert "inadmissible" not in result  # neither run logged it
    assert "entropy: new - base -0.050 (new at or above in 1 of 2 iterations)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="share no training iteration from the second on"):
        advantage_mass.paired_difference(run_log([0.1, 0.2], [0.5, 0.5]), run_log([0.1], [0.5]))
