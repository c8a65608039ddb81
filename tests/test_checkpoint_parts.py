"""A checkpoint folder split into parts under a size limit comes back whole, or a damaged part is named."""
import pytest
import torch
from safetensors.torch import load_file

from molmo_agent.models.checkpoint_parts import join, main, split, weights_sha256


def test_split_then_join_gives_the_bf16_checkpoint_back(molmo2_dir, tmp_path, capsys):
    split(molmo2_dir, tmp_path / "parts", part_mib=1, bf16=True)
    parts = sorted((tmp_path / "parts").glob("part*"))
    assert len(parts) > 2 and all(part.stat().st_size <= 1 << 20 for part in parts)
    join(tmp_path / "parts", tmp_path / "back")

    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == sorted(p.name for p in molmo2_dir.iterdir())
    for path in molmo2_dir.glob("*.safetensors"):
        original, back = load_file(path), load_file(tmp_path / "back" / path.name)
        for name, tensor in original.items():
            assert back[name].dtype == (torch.bfloat16 if tensor.is_floating_point() else tensor.dtype)
            torch.testing.assert_close(back[name], tensor.to(back[name].dtype), rtol=0, atol=0)
    digest = weights_sha256(tmp_path / "back")
    assert f"weights sha256 {digest}" in capsys.readouterr().out
    assert f"{digest}  weights" in (tmp_path / "parts" / "SHA256SUMS").read_text()


def test_a_damaged_or_missing_part_is_named_and_nothing_unpacks(molmo2_dir, tmp_path):
    split(molmo2_dir, tmp_path / "parts", part_mib=1, bf16=False)
    assert weights_sha256(molmo2_dir) in (tmp_path / "parts" / "SHA256SUMS").read_text()
    part = tmp_path / "parts" / "part01"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    (tmp_path / "parts" / "part02").unlink()
    with pytest.raises(SystemExit, match="missing or damaged parts in .*: part01, part02"):
        join(tmp_path / "parts", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_a_training_runs_resume_point_travels_too(tmp_path, capsys):
    # verl's checkpoint: torch shards and the step marker, no safetensors
    run = tmp_path / "run"
    (run / "global_step_10" / "actor").mkdir(parents=True)
    (run / "global_step_10" / "actor" / "model_world_size_1_rank_0.pt").write_bytes(bytes(range(256)) * 4000)
    (run / "latest_checkpointed_iteration.txt").write_text("10")
    main(["split", str(run), str(tmp_path / "parts"), "--part-mib", "1"])
    assert "weights sha256 -" in capsys.readouterr().out
    main(["join", str(tmp_path / "parts"), str(tmp_path / "back")])
    for path in run.rglob("*"):
        if path.is_file():
            assert (tmp_path / "back" / path.relative_to(run)).read_bytes() == path.read_bytes()
