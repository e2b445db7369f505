#!/usr/bin/env bash
# Build the sdist and the wheel (python -m build), install the wheel into a fresh virtualenv (run-time
# dependencies from the package index, no checkout on the path) and run .ci/wheel_smoke.py from outside
# the source tree. Usage: .ci/wheel_smoke.sh [python]   (the python that has `build`; default .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${1:-$repo/.venv/bin/python}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
ls "$work"/dist/optax_like-*.tar.gz >/dev/null
wheel=$(ls "$work"/dist/optax_like-*-py3-none-any.whl)
listing=$(unzip -l "$wheel")   # not piped into grep -q: under pipefail, unzip's SIGPIPE would fail it
case "$listing" in *optax_like/py.typed*) ;; *) echo "wheel: py.typed missing" >&2; exit 1 ;; esac

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$wheel"
cp .ci/wheel_smoke.py "$work/smoke.py"
cd "$work"   # outside the source tree: `import optax_like` must find the installed wheel
env -u PYTHONPATH "$work/venv/bin/python" smoke.py
echo "wheel smoke: $(basename "$wheel") and $(basename "$work"/dist/*.tar.gz) built, installed and stepped"
