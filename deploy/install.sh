#!/bin/sh
# The image's install steps, shared by the Dockerfile and CI (tests/deploy runs this in a fresh venv):
# a virtual environment holding this project with one extra. `serve`/`gpu` never pull torch.
#   usage: deploy/install.sh VENV_DIR EXTRA        (EXTRA: serve | gpu | train)
set -eu
venv=${1:?usage: install.sh VENV_DIR EXTRA}
extra=${2:-serve}
src=$(cd "$(dirname "$0")/.." && pwd)
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
if [ "$extra" = "train" ]; then
    # CPU torch first, pinned: the train extra's range is then satisfied and nothing pulls a CUDA build.
    "$venv/bin/python" -m pip install --quiet --no-cache-dir "torch==2.13.0"
fi
"$venv/bin/python" -m pip install --quiet --no-cache-dir "$src[$extra]"
if [ "$extra" != "train" ]; then
    "$venv/bin/python" -c "import service.app, sys; assert 'torch' not in sys.modules, 'serving image pulled torch'"
    # The verifiers' own dependencies (math-verify, a YAML reader) import where the service runs.
    "$venv/bin/python" -c "import math_verify, yaml, service.core.verifiers.worker"
fi
echo "installed $src[$extra] into $venv"
