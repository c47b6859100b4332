#!/usr/bin/env bash
# Move the pins forward: re-resolve constraints.txt from pyproject.toml (runtime deps + the dev extra),
# install through the new pins and run the whole suite. Commit constraints.txt only if the suite passes.
#
#   scripts/update-pins.sh                      # every package to its newest release that the ranges allow
#   scripts/update-pins.sh --upgrade-package X  # only X (and what X needs); the other pins stay
#   scripts/update-pins.sh --no-upgrade         # re-resolve after editing pyproject.toml, keeping the pins
#
# torch is deliberately left out of the lock (pip-compile's --unsafe-package): CPU machines install
# torch==2.13.0 beside it, GPU machines bring their own CUDA build first (README "Set-up").
set -euo pipefail
cd "$(dirname "$0")/.."

upgrade=(--upgrade)
if [[ "${1:-}" == "--no-upgrade" ]]; then
    upgrade=()
    shift
elif [[ "${1:-}" == "--upgrade-package" ]]; then
    upgrade=()
fi

python -m pip install -q -c constraints.txt pip-tools
pip-compile --quiet "${upgrade[@]}" "$@" --extra dev --strip-extras --unsafe-package torch \
    --no-emit-index-url --no-emit-find-links --output-file constraints.txt pyproject.toml
python -m pip install -c constraints.txt torch==2.13.0 -e '.[dev]'
python -m pytest
git --no-pager diff --stat -- constraints.txt
