#!/usr/bin/env bash
# lmms-eval integration tests in their own virtual environment (lmms-eval is too heavy for the main test venv).
#
#   bash integrations/lmms_eval/ci.sh [VENV_DIR] [-- extra pytest arguments]
#
# Creates VENV_DIR (default: .ci/venv-lmms-eval in the repository, git-ignored; reused while this script,
# the plugin's pyproject.toml and requirements.txt are unchanged), installs torch==2.13.0 together with
# lmms-eval==0.7.3 (in one pip command, so that pip keeps that torch instead of pulling a newer CUDA one), the
# project requirements, filelock<4 (lmms-eval 0.7.3 imports filelock._api), pytest and this plugin, removes a
# torchvision that does not load with that torch, then runs tests/ offline on CPU. Exits non-zero when a test
# fails and when pytest collects no test (pytest's exit code 5).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${1:-$ROOT/.ci/venv-lmms-eval}"
if [[ $# -gt 0 ]]; then shift; fi
if [[ "${1:-}" == "--" ]]; then shift; fi
PYTHON="${PYTHON:-python3}"
# optional: TORCH_INDEX=https://download.pytorch.org/whl/cpu to take torch's CPU build from PyTorch's index
INDEX=()
if [[ -n "${TORCH_INDEX:-}" ]]; then INDEX=(--extra-index-url "$TORCH_INDEX"); fi

STAMP="$VENV/.lmms-eval-pvc-stamp"
WANT="$(cat "$ROOT/requirements.txt" "$HERE/pyproject.toml" "$HERE/ci.sh" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "${INDEX[@]}" \
        "torch==2.13.0" "lmms-eval==0.7.3" -r "$ROOT/requirements.txt" "filelock<4" "pytest>=7"
    # the torchvision wheel pip may pick does not load with the CPU torch (torchvision::nms); nothing here needs it
    if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip uninstall -y -q torchvision || true
    fi
    echo "$WANT" > "$STAMP"
fi
# the plugin itself: reinstalled every time (cheap), from this checkout
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$HERE"
rm -rf "$HERE/build" "$HERE"/*.egg-info

cd "$HERE"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "ci.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit $status
