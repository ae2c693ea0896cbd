#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv, then run the given command inside it.
#   bash tests/bootstrap.sh irlib reproduce --profile smoke     # main job
#   bash tests/bootstrap.sh python -m pytest                    # tests
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IRLIB_VENV:-.venv}"
STAMP="$VENV/.irlib-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # CPU machines here carry these two wheels on local disk; elsewhere pip downloads them.
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install -q -e ".[offline-text,test]"
  echo "$WANT" > "$STAMP"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" MPLBACKEND=Agg
PATH="$PWD/$VENV/bin:$PATH" exec "$@"
