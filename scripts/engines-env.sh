#!/usr/bin/env bash
# Creates (once) and prints the path of the engines' virtual environment.
# The venv lives outside the checkout, keyed by the requirements files' hash, so
# tests, the demo and CI all reuse one install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/engines/requirements.txt"
nodeps="$root/engines/requirements-nodeps.txt"
key=$(cat "$req" "$nodeps" | sha256sum | cut -c1-16)
cache=${GPU_WORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-worker}
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  mkdir -p "$cache"
  rm -rf "$venv.tmp"
  python3 -m venv "$venv.tmp" >&2
  "$venv.tmp/bin/pip" install -q --upgrade pip >&2
  "$venv.tmp/bin/pip" install -q -r "$req" >&2
  "$venv.tmp/bin/pip" install -q --no-deps -r "$nodeps" >&2
  touch "$venv.tmp/.complete"
  rm -rf "$venv"
  mv "$venv.tmp" "$venv"
  # venv scripts embed their path; recreate entry points at the final location
  python3 -m venv --upgrade "$venv" >&2
fi
echo "$venv"
