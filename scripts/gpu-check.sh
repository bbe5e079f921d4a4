#!/usr/bin/env bash
# The GPU check: one short run that proves every GPU path (scripts/gpu_check.py
# says which) and writes its figures as it goes.
#
#   scripts/gpu-check.sh --prepare           on the development machine: build the
#                                            binaries, fetch the Python packages the
#                                            GPU machine's image lacks and build the
#                                            demo project, all into .gpu-check/
#   scripts/gpu-check.sh --out DIR           run the checks (on the GPU machine, with
#                                            .gpu-check/ carried along)
#   scripts/gpu-check.sh --dry-run --out DIR the same on this machine's CPU at tiny
#                                            sizes (make test runs it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prep=.gpu-check
mode=run out="" dry=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --dry-run) dry=(--dry-run) ;;
    --out) out=$2; shift ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = prepare ]; then
  rm -rf "$prep" && mkdir -p "$prep/bin" "$prep/whl"
  go build -ldflags "-s -w" -o "$prep/bin/gpu-worker" ./cmd/gpu-worker
  go build -ldflags "-s -w" -o "$prep/bin/demo" ./cmd/demo
  # The GPU image has PyTorch, transformers, torchdiffeq, scipy and NVML's
  # bindings; these are what it lacks (catboost, 100 MB, does not travel: the
  # post-correction step reports it missing there).
  py=$(scripts/engines-env.sh)/bin/python
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$prep/whl" soundfile==0.14.0 cffi uroman==1.3.1.1 Unidecode==1.4.0 inflect==7.5.0 typeguard \
    more-itertools jaraco.functools pygtrie==2.5.0 pyctcdecode==0.5.0
  "$py" -m pip download -q --no-deps --no-binary=:all: -d "$prep/whl" eng-to-ipa==0.0.2 kenlm==0.3.0
  go run ./cmd/demo --build-only --dir "$prep/demo-project"
  du -sh "$prep"
  exit 0
fi

[ -n "$out" ] || { echo "gpu-check: --out DIR is required" >&2; exit 2; }
worker=bin/gpu-worker
if [ -d "$prep/whl" ] && [ ${#dry[@]} -eq 0 ]; then
  # On the GPU machine: its image's python3, plus the carried packages.
  site=/tmp/gpu-check-site
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$prep"/whl/*.whl
  for sdist in "$prep"/whl/*.tar.gz; do
    MAX_JOBS=16 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" "$sdist" \
      || echo "gpu-check: could not build $(basename "$sdist"); the steps that need it will say so" >&2
  done
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  python=python3
  worker=$prep/bin/gpu-worker
  export GPU_CHECK_DEMO_PROJECT=$root/$prep/demo-project
else
  python=$(scripts/engines-env.sh)/bin/python
  [ -x "$worker" ] || go build -o "$worker" ./cmd/gpu-worker
  [ -x bin/demo ] || go build -o bin/demo ./cmd/demo
fi
exec "$python" scripts/gpu_check.py --out "$out" --worker "$worker" "${dry[@]}"
