#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with every wheel the GPU node lacks (requirements-node.txt minus node-freeze.txt),
# for CPython 3.12 on manylinux x86-64, packed into parts of PART_MB MiB (default 50): .gpu/part00, part01, ...
# and .gpu/SHA256SUMS. Source-only packages are built into wheels with PY312 (a Python 3.12).
# Wheels already in .gpu/wheels are kept (put a downloaded vllm wheel there to skip its 280 MB download).
# Then install on the node with tests/gpu/install_bundle.sh (see tests/gpu/README.md).
# Usage: PYTHON=/path/to/python-with-pip-and-packaging PY312=/path/to/python3.12 tests/gpu/prepare_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
PY312=${PY312:-python3.12}
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' || { echo "PY312 must be a Python 3.12"; exit 1; }
mkdir -p .gpu/wheels
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" tests/gpu/wheelhouse.py -r tests/gpu/requirements-node.txt --freeze tests/gpu/node-freeze.txt \
  --python-version 3.12 --build-python "$PY312" --out .gpu/wheels --parts .gpu --part-mb "${PART_MB:-50}"
ls -l .gpu/part*
