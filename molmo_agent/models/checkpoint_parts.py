"""Move a checkpoint folder (a model's, or a training run's resume point) between machines in parts small enough
for a file-size limit.

    python -m molmo_agent.models.checkpoint_parts split MODEL_DIR PARTS_DIR [--part-mib 16] [--bf16]
    python -m molmo_agent.models.checkpoint_parts join PARTS_DIR MODEL_DIR

`split` packs MODEL_DIR (every file; with --bf16 its floating-point safetensors tensors cast to bfloat16 first,
halving an fp32 checkpoint; config.json is left as it is: loaders cast to the dtype they ask for) into one tar,
cuts it into PARTS_DIR/part00, part01, ... of at most --part-mib MiB (`cut_into_parts`, which also cuts the GPU
wheel bundle) and writes PARTS_DIR/SHA256SUMS: each part's digest, the tar's, and `weights` = `weights_sha256`
of the packed folder (its safetensors files in name order; `-` for a folder without any), the number a learning
result records (bench/learning.py). `join` checks every digest, unpacks into MODEL_DIR (which must not exist) and
prints the weights digest again. A missing or damaged part is named, and nothing is unpacked.
"""
import argparse
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

TAR = "checkpoint.tar"
WEIGHTS = "weights"
NO_WEIGHTS = "-"  # the weights digest of a folder without safetensors files (a verl checkpoint of .pt shards)


def sha256(*paths: Path) -> str:
    """SHA-256 over the files' bytes, one after another."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_sha256(model_dir: Path) -> str | None:
    """SHA-256 over a checkpoint's safetensors files, in name order; None when it has none."""
    files = sorted(model_dir.glob("*.safetensors"))
    return sha256(*files) if files else None


def cut_into_parts(archive: Path, parts_dir: Path, part_mib: int) -> list[Path]:
    """`archive` cut into parts_dir/part00, part01, ... of at most `part_mib` MiB (names as wide as the count needs,
    so that they sort in order); `cat part*` joins them."""
    size = part_mib << 20
    count = max(1, -(-archive.stat().st_size // size))
    width = max(2, len(str(count - 1)))
    parts = []
    with archive.open("rb") as source:
        while block := source.read(size):
            parts.append(parts_dir / f"part{len(parts):0{width}d}")
            parts[-1].write_bytes(block)
    return parts


def to_bf16(model_dir: Path, out: Path) -> None:
    """A copy of `model_dir` whose floating-point safetensors tensors are bfloat16."""
    # Imported here: splitting and joining need only the standard library (the GPU wheel bundle is cut with it).
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    for path in out.glob("*.safetensors"):
        tensors = {name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in load_file(path).items()}
        save_file(tensors, path, metadata={"format": "pt"})


def split(model_dir: Path, parts_dir: Path, part_mib: int, bf16: bool) -> None:
    if not model_dir.is_dir():
        sys.exit(f"{model_dir} is not a folder")
    parts_dir.mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryDirectory() as scratch:
        source = model_dir.resolve()
        if bf16:
            source = Path(scratch) / "bf16"
            to_bf16(model_dir.resolve(), source)
        tar_path = Path(scratch) / TAR
        with tarfile.open(tar_path, "w") as tar:
            tar.add(source, arcname=".")
        sums = {part.name: sha256(part) for part in cut_into_parts(tar_path, parts_dir, part_mib)}
        sums[TAR] = sha256(tar_path)
        sums[WEIGHTS] = weights_sha256(source) or NO_WEIGHTS
    (parts_dir / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    print(f"{len(sums) - 2} parts of at most {part_mib} MiB in {parts_dir}; weights sha256 {sums[WEIGHTS]}")


def read_sums(sums_file: Path) -> dict[str, str]:
    """A SHA256SUMS file of `split`: {name: digest}, the names being the parts, the tar and `weights`."""
    return dict(reversed(line.split()) for line in sums_file.read_text().splitlines())


def join(parts_dir: Path, model_dir: Path) -> None:
    sums_file = parts_dir / "SHA256SUMS"
    if not sums_file.is_file():
        sys.exit(f"{sums_file} is missing")
    sums = read_sums(sums_file)
    parts = sorted(name for name in sums if name.startswith("part"))
    bad = [name for name in parts if not (parts_dir / name).is_file() or sha256(parts_dir / name) != sums[name]]
    if bad:
        sys.exit(f"missing or damaged parts in {parts_dir}: {', '.join(bad)}")
    if model_dir.exists():
        sys.exit(f"{model_dir} exists: join unpacks into a new folder")
    data = io.BytesIO(b"".join((parts_dir / name).read_bytes() for name in parts))
    if hashlib.sha256(data.getvalue()).hexdigest() != sums[TAR]:
        sys.exit(f"the joined parts do not give {TAR}'s digest: a part is from another split")
    with tarfile.open(fileobj=data) as tar:
        tar.extractall(model_dir, filter="data")
    got = weights_sha256(model_dir) or NO_WEIGHTS
    if got != sums[WEIGHTS]:
        sys.exit(f"{model_dir}: weights sha256 {got}, expected {sums[WEIGHTS]}")
    print(f"{model_dir}: weights sha256 {got}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split")
    split_parser.add_argument("model_dir", type=Path)
    split_parser.add_argument("parts_dir", type=Path)
    split_parser.add_argument("--part-mib", type=int, default=16)
    split_parser.add_argument("--bf16", action="store_true")
    join_parser = commands.add_parser("join")
    join_parser.add_argument("parts_dir", type=Path)
    join_parser.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "split":
        split(args.model_dir, args.parts_dir, args.part_mib, args.bf16)
    else:
        join(args.parts_dir, args.model_dir)


if __name__ == "__main__":
    main()
