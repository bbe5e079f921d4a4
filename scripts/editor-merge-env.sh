#!/usr/bin/env bash
# Builds (once) and prints the path of the Codex editor's notebook merge,
# bundled with its command-line driver (codex/editormerge): esbuild from npm,
# installed outside the checkout keyed by the lock file's hash, and the
# bundle beside it keyed by the hash of everything that goes into it, so
# tests and CI reuse one install and one build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness="$root/codex/editormerge"
vendored="$root/third_party/codex-editor"
cache=${GPU_WORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-worker}

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "editor-merge-env: $tool is required" >&2; exit 1; }
done

npm_key=$(cat "$harness/package.json" "$harness/package-lock.json" | sha256sum | cut -c1-16)
modules="$cache/editor-merge-npm-$npm_key"
if [ ! -f "$modules/.complete" ]; then
  mkdir -p "$cache"
  rm -rf "$modules.tmp"
  mkdir -p "$modules.tmp"
  cp "$harness/package.json" "$harness/package-lock.json" "$modules.tmp/"
  # esbuild's binary comes as an npm package of its own; its install
  # script only re-checks it.
  (cd "$modules.tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  touch "$modules.tmp/.complete"
  rm -rf "$modules"
  mv "$modules.tmp" "$modules"
fi

src_key=$( (cd "$root" && find codex/editormerge third_party/codex-editor -type f \
  \( -name '*.ts' -o -name '*.cjs' -o -name '*.json' \) -not -path '*/node_modules/*' | LC_ALL=C sort |
  while read -r f; do printf '%s\n' "$f"; cat "$f"; done) | sha256sum | cut -c1-16)
bundle_dir="$cache/editor-merge-$npm_key-$src_key"
if [ ! -f "$bundle_dir/merge.cjs" ]; then
  mkdir -p "$bundle_dir"
  NODE_PATH="$modules/node_modules" node "$harness/build.cjs" "$bundle_dir/merge.cjs.tmp"
  mv "$bundle_dir/merge.cjs.tmp" "$bundle_dir/merge.cjs"
fi
echo "$bundle_dir/merge.cjs"
