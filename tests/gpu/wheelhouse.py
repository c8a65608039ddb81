"""Build a wheelhouse for an air-gapped GPU node: the wheels its Python needs beyond what it already has.

GPU clusters often reach no package index, and their Python (here 3.12) differs from the machine that prepares
the install (3.11). Given fully pinned requirements (`name==version`, one per line: the whole dependency
closure, as `pip freeze` prints it) and the node's own `pip freeze`, this
1. drops every pin the node already has at that version;
2. downloads each remaining pin as a wheel for the node's Python and platform
   (`pip download --only-binary=:all: --python-version ... --platform ...`);
3. builds a wheel from the source archive where the index has none (e.g. jericho, fast-downward-textworld,
   antlr4-python3-runtime), with a Python of the node's version (`--build-python`), and rejects any wheel whose
   tags the node cannot install;
4. optionally packs the wheels into one tar split into parts of `--part-mb` MB, for transports that limit the
   size of one transfer (`cat part* > bundle.tar` joins them; `tests/gpu/install_bundle.sh` installs them).

On the node: `pip install --no-index --no-deps --target DIR *.whl`, then `PYTHONPATH=DIR`.

    python tests/gpu/wheelhouse.py -r tests/gpu/requirements-node.txt --freeze tests/gpu/node-freeze.txt \
        --python-version 3.12 --build-python python3.12 --out .gpu/wheels --parts .gpu --part-mb 50
"""
import argparse
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from molmo_agent.models.checkpoint_parts import cut_into_parts, sha256

Runner = Callable[[Sequence[str]], int]
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(?P<version>[A-Za-z0-9.+!_-]+)")

# manylinux glibc versions pip must be told one by one (it matches `manylinux_2_N` exactly); 2.39 = Ubuntu 24.04.
MANYLINUX_GLIBC_MINORS = (5, 12, 17, 24, 26, 27, 28, 31, 34, 35, 39)


@dataclass(frozen=True)
class Target:
    """The node's interpreter: CPython `python_version` ("3.12") on x86-64 Linux with glibc up to `glibc`."""

    python_version: str = "3.12"
    glibc: tuple[int, int] = (2, 39)

    @property
    def platforms(self) -> list[str]:
        """Platform tags to offer pip, newest first, limited to the node's glibc."""
        manylinux = [f"manylinux_2_{m}_x86_64" for m in reversed(MANYLINUX_GLIBC_MINORS) if (2, m) <= self.glibc]
        return [*manylinux, "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def supported_tags(self) -> set[Tag]:
        """Every wheel tag the node's pip accepts."""
        version = tuple(int(part) for part in self.python_version.split("."))
        return set(cpython_tags(version, [self.abi, "abi3", "none"], self.platforms)) | set(
            compatible_tags(version, self.abi, self.platforms)
        )


def read_pins(lines: Iterable[str]) -> dict[str, str]:
    """Canonical name -> version from requirement / `pip freeze` lines; comments, blanks and options skipped.

    Lines such as `name @ file:///...` (a local install) count as the name at an unknown version ("").
    Anything else that is not `name==version` is a ValueError: the wheelhouse needs exact pins.
    """
    pins = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if " @ " in line:
            pins[canonicalize_name(line.split(" @ ", 1)[0])] = ""
            continue
        pin = PIN.fullmatch(line)
        if pin is None:
            raise ValueError(f"requirement {raw.strip()!r} is not pinned as name==version")
        pins[canonicalize_name(pin["name"])] = pin["version"]
    return pins


def missing_pins(wanted: dict[str, str], installed: dict[str, str]) -> dict[str, str]:
    """The pins of `wanted` that `installed` lacks or has at another version (those are installed over it)."""
    return {name: version for name, version in wanted.items() if installed.get(name) != version}


def download_command(name: str, version: str, target: Target, dest: Path) -> list[str]:
    """pip command that fetches the wheel of name==version for the target, and nothing else."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", target.python_version, "--implementation", "cp", "--abi", target.abi,
               "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for platform in [*target.platforms, "any"]:
        command += ["--platform", platform]
    return [*command, f"{name}=={version}"]


def build_command(name: str, version: str, build_python: str, dest: Path) -> list[str]:
    """pip command that builds a wheel of name==version from its source archive with `build_python`."""
    return [build_python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), f"{name}=={version}"]


def wheel_of(folder: Path, name: str, version: str) -> Path | None:
    """The wheel of name==version in `folder`, if any."""
    for path in folder.glob("*.whl"):
        wheel_name, wheel_version, _, _ = parse_wheel_filename(path.name)
        if wheel_name == canonicalize_name(name) and wheel_version == Version(version):
            return path
    return None


def run_command(command: Sequence[str]) -> int:
    """Run a pip command, its output passed through; return its exit status."""
    return subprocess.run(list(command), check=False).returncode


def build_wheelhouse(
    pins: dict[str, str],
    target: Target,
    dest: Path,
    build_python: str,
    run: Runner,
) -> list[Path]:
    """Put one wheel per pin into `dest` (one already there is kept: seed `dest` to skip downloads); return them.

    `run` executes a pip command and returns its exit status. Raises one ValueError listing every pin that got
    no wheel or a wheel the target cannot install.
    """
    dest.mkdir(parents=True, exist_ok=True)
    supported = target.supported_tags()
    wheels, problems = [], []
    for i, (name, version) in enumerate(sorted(pins.items()), 1):
        wheel = wheel_of(dest, name, version)
        if wheel is None and run(download_command(name, version, target, dest)) != 0:
            print(f"[{i}/{len(pins)}] {name}=={version}: no wheel for the target, building one", flush=True)
            run(build_command(name, version, build_python, dest))
        wheel = wheel_of(dest, name, version)
        if wheel is None:
            problems.append(f"{name}=={version}: no wheel")
        elif not set(parse_wheel_filename(wheel.name)[3]) & supported:
            problems.append(f"{name}=={version}: {wheel.name} does not install on CPython {target.python_version}")
        else:
            wheels.append(wheel)
            print(f"[{i}/{len(pins)}] {wheel.name}", flush=True)
    if problems:
        raise ValueError("wheelhouse incomplete:\n  " + "\n  ".join(problems))
    return wheels


def pack(wheels: Sequence[Path], out: Path, part_mb: int) -> list[Path]:
    """Tar `wheels` (flat) and split the tar into `out/partNN` of `part_mb` MiB; write `out/SHA256SUMS` of the
    whole tar and the parts. Returns the parts."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part*"):
        stale.unlink()
    bundle = out / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for wheel in sorted(wheels):
            tar.add(wheel, arcname=wheel.name)
    parts = cut_into_parts(bundle, out, part_mb)
    sums = [f"{sha256(path)}  {path.name}" for path in [bundle, *parts]]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    bundle.unlink()
    return parts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("-r", "--requirements", type=Path, action="append", required=True,
                        help="pinned requirements (name==version), repeatable")
    parser.add_argument("--freeze", type=Path, help="the node's `pip freeze`: pins it already has are left out")
    parser.add_argument("--python-version", default="3.12", help="the node's Python (default 3.12)")
    parser.add_argument("--glibc", default="2.39", help="the node's glibc version (default 2.39)")
    parser.add_argument("--build-python", default=sys.executable,
                        help="Python of the node's version, to build wheels of source-only packages")
    parser.add_argument("--out", type=Path, required=True, help="folder that receives the wheels")
    parser.add_argument("--parts", type=Path, help="also pack the wheels into parts in this folder")
    parser.add_argument("--part-mb", type=int, default=50, help="size of one part in MiB (default 50)")
    args = parser.parse_args(argv)

    wanted = {}
    for path in args.requirements:
        wanted.update(read_pins(path.read_text().splitlines()))
    installed = read_pins(args.freeze.read_text().splitlines()) if args.freeze else {}
    pins = missing_pins(wanted, installed)
    print(f"{len(wanted)} pins, {len(wanted) - len(pins)} already on the node, {len(pins)} to fetch", flush=True)
    target = Target(args.python_version, tuple(int(x) for x in args.glibc.split(".")))
    wheels = build_wheelhouse(pins, target, args.out, args.build_python, run_command)
    total = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {total / 1e6:.0f} MB in {args.out}")
    if args.parts:
        parts = pack(wheels, args.parts, args.part_mb)
        print(f"{len(parts)} parts of up to {args.part_mb} MiB in {args.parts} (SHA256SUMS beside them)")


if __name__ == "__main__":
    main()
