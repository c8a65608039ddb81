"""bench/sampling_tail.py: one row's figures against hand-computed softmaxes (a top-k cut renormalizes, a higher
temperature moves mass to the tail), the seen vocabulary, and a whole run on a tiny checkpoint's rows."""
import json
import math

import pandas as pd
import pytest
import torch

import sampling_tail as bench

VOCAB = 30
UNSEEN = torch.zeros(VOCAB, dtype=torch.bool)
UNSEEN[25:] = True  # five token ids no row holds


def peaked_logits(positions: int) -> torch.Tensor:
    """[positions, VOCAB]: token 0 at 10, every other at 0."""
    logits = torch.zeros(positions, VOCAB)
    logits[:, 0] = 10.0
    return logits


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_without_a_cut_the_figures_are_the_full_softmaxs(temperature):
    top = math.exp(10 / temperature)
    p_top, p_other = top / (top + VOCAB - 1), 1 / (top + VOCAB - 1)
    stats = bench.row_stats(peaked_logits(2), [0, 0], UNSEEN, temperature, 0, group_size=8)
    entropy = -(p_top * math.log(p_top) + (VOCAB - 1) * p_other * math.log(p_other))
    assert stats["entropy"] == pytest.approx(entropy, rel=1e-5)
    assert stats["p_outside_top20"] == pytest.approx((VOCAB - 20) * p_other, rel=1e-4)
    assert stats["p_unseen_vocab"] == pytest.approx(5 * p_other, rel=1e-4)
    assert stats["answer_with_unseen_token"] == pytest.approx(1 - (1 - 5 * p_other) ** 2, rel=1e-4)
    assert stats["answer_deviates"] == pytest.approx(1 - p_top ** 2, rel=1e-4)
    assert stats["group_deviates"] == pytest.approx(1 - p_top ** 16, rel=1e-4)


def test_a_top_k_cut_samples_only_the_largest_logits_and_the_tail_figures_ignore_it():
    full = bench.row_stats(peaked_logits(2), [0, 0], UNSEEN, 2.0, 0, group_size=8)
    cut = bench.row_stats(peaked_logits(2), [0, 0], UNSEEN, 2.0, 1, group_size=8)
    assert cut["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert cut["answer_deviates"] == pytest.approx(0.0, abs=1e-6)
    assert cut["group_deviates"] == pytest.approx(0.0, abs=1e-6)
    for name in ("p_outside_top20", "p_unseen_vocab", "answer_with_unseen_token"):  # what the cut removes
        assert cut[name] == full[name] > 0
    # an answer token outside the cut can never be sampled
    assert bench.row_stats(peaked_logits(1), [3], UNSEEN, 1.0, 1, group_size=8)["answer_deviates"] == 1.0


def test_a_higher_temperature_explores_more():
    low, high = (bench.row_stats(peaked_logits(3), [0, 0, 0], UNSEEN, t, 0, group_size=8) for t in (1.0, 1.5))
    assert all(high[name] > low[name] for name in low)


def test_seen_vocab_marks_every_id_of_prompts_and_answers():
    rows = pd.DataFrame({"prompt_ids": [[1, 2], [2, 7]], "response_ids": [[3], [9, 9]]})
    assert bench.seen_vocab(rows, 12).nonzero()[0].tolist() == [1, 2, 3, 7, 9]


def test_a_run_scores_each_row_at_each_setting_by_verb(molmo2_dir, tmp_path):
    rows = tmp_path / "valid_unseen.parquet"
    pd.DataFrame({"prompt_ids": [[11, 12, 13], [14, 15]], "response_ids": [[16, 17], [18]],
                  "action": ["go to desk 1", "take pen 1 from desk 1"]}).to_parquet(rows)
    out = tmp_path / "tail.json"
    bench.main(["--model", str(molmo2_dir), "--rows", str(rows), "--temperatures", "1.0", "1.5",
                "--top-k", "0", "1", "--out", str(out)])
    assert torch.is_grad_enabled()  # scoring leaves the process as it found it (later tests take gradients)
    result = json.loads(out.read_text())
    assert [(s["temperature"], s["top_k"]) for s in result["settings"]] == [(1.0, 0), (1.0, 1), (1.5, 0), (1.5, 1)]
    assert result["n_rows"] == 2 and result["unseen_vocab"] == result["vocab"] - 8
    for setting in result["settings"]:
        assert {group: figures["rows"] for group, figures in setting["by_verb"].items()} == {"all": 2, "go": 1,
                                                                                             "take": 1}
    greedy = result["settings"][1]["by_verb"]["all"]
    assert greedy["entropy"] == pytest.approx(0.0, abs=1e-6)  # top-k 1 leaves one token to sample
    assert result["settings"][2]["by_verb"]["all"]["entropy"] > result["settings"][0]["by_verb"]["all"]["entropy"]


def test_a_temperature_of_zero_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--model", "m", "--rows", "r.parquet", "--temperatures", "0", "--out", str(tmp_path / "o.json")])
