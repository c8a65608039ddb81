"""bench/update_split.py on console lines printed with verl's formatter."""
import json
import pathlib
import sys

import pytest

from molmo_agent.integrations.verl.flops import estimate_molmo2_tflops
from molmo_agent.models.molmo2.configuration import tiny_config
from verl.utils.logger.aggregate_logger import concat_dict_to_str

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import update_split  # noqa: E402

TOKENS, SAMPLES = 60_000, 120


def step_line(step: int, update_s: float, engine_s: float, config) -> str:
    """A step line whose MFU is what verl would log had `engine.train_batch` taken `engine_s`."""
    flop = estimate_molmo2_tflops(config, TOKENS, [TOKENS // SAMPLES] * SAMPLES, delta_time=1.0) * 1e12
    metrics = {"timing_s/update_actor": update_s, "perf/mfu/actor": flop / (engine_s * update_split.H200_PEAK),
               "perf/total_num_tokens": TOKENS, "env/steps": float(SAMPLES), "actor/lr": 2e-5}
    return concat_dict_to_str(metrics, step=step)


def test_engine_seconds_invert_the_mfu_and_the_rest_is_outside():
    config = tiny_config()
    log = "\n".join([step_line(1, 20.0, 8.0, config), "(TaskRunner pid=1) some other line",
                     concat_dict_to_str({"val-core/alfworld/valid_seen/acc/mean@1": 0.2}, step=0),
                     step_line(2, 30.0, 12.0, config)])
    rows = update_split.update_split(log, config)
    assert [row["iteration"] for row in rows] == [1, 2]  # the validation-only step 0 has no update
    assert [row["engine_s"] for row in rows] == pytest.approx([8.0, 12.0])
    assert [row["outside_s"] for row in rows] == pytest.approx([12.0, 18.0])
    assert update_split.summary(rows) == pytest.approx(
        {"update_s": 25.0, "engine_s": 10.0, "outside_s": 15.0, "outside_share": 0.6})
    # a slower peak means the same MFU stands for more FLOP/s: more engine time
    assert update_split.update_split(log, config, peak=update_split.H200_PEAK / 2)[0]["engine_s"] == \
        pytest.approx(16.0)


def test_a_run_writes_each_logs_iterations_and_refuses_a_log_without_updates(tmp_path, capsys):
    config = tiny_config()
    config.save_pretrained(tmp_path / "model")
    log = tmp_path / "gigpo_seed0.log"
    log.write_text(step_line(1, 20.0, 8.0, config) + "\n")
    out = tmp_path / "split.json"
    update_split.main(["--model", str(tmp_path / "model"), str(log), "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["runs"]["gigpo_seed0.log"]["median"]["engine_s"] == pytest.approx(8.0)
    assert "it 1: 20.0 = 8.0 engine + 12.0" in capsys.readouterr().out

    empty = tmp_path / "empty.log"
    empty.write_text("no step lines\n")
    with pytest.raises(SystemExit, match="empty.log: no iteration logged"):
        update_split.main(["--model", str(tmp_path / "model"), str(empty)])
