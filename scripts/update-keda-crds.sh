#!/usr/bin/env bash
# Refreshes third_party/keda/ from KEDA's Go module: the ScaledObject and
# ScaledJob CRDs that deploy/'s tests validate the manifests against, the
# sources of the two scalers the manifests use (their trigger metadata names
# are not in the CRDs; kept as .go.txt so that they are never compiled), and
# KEDA's licence. The module comes through the Go module proxy like any
# dependency (its go.sum hash is checked by `go mod download`); KEDA's Go
# packages themselves are not a dependency of this module.
#   scripts/update-keda-crds.sh            # the version in third_party/keda/VERSION
#   scripts/update-keda-crds.sh v2.21.1    # another release
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/third_party/keda
version=${1:-$(cat "$dest/VERSION")}
module=github.com/kedacore/keda/v2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A throwaway module, so that this module's go.mod and go.sum stay as they are.
(cd "$tmp" && go mod init keda-crds >/dev/null 2>&1 && go mod download -json "$module@$version" >info.json)
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/info.json")
sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' "$tmp/info.json")
[ -n "$dir" ] && [ -d "$dir" ] || { echo "module $module@$version not downloaded" >&2; exit 1; }
mkdir -p "$dest"
for f in keda.sh_scaledobjects.yaml keda.sh_scaledjobs.yaml; do
  install -m 0644 "$dir/config/crd/bases/$f" "$dest/$f"
done
mkdir -p "$dest/scalers"
for f in prometheus_scaler.go metrics_api_scaler.go; do
  install -m 0644 "$dir/pkg/scalers/$f" "$dest/scalers/$f.txt"
done
install -m 0644 "$dir/LICENSE" "$dest/LICENSE"
echo "$version" >"$dest/VERSION"
{
  echo "module: $module"
  echo "version: $version"
  echo "module_sum: $sum"
  echo "files:"
  for f in keda.sh_scaledobjects.yaml keda.sh_scaledjobs.yaml; do
    echo "  - path: $f"
    echo "    from: config/crd/bases/$f"
    echo "    sha256: $(sha256sum "$dest/$f" | cut -d' ' -f1)"
  done
  for f in prometheus_scaler.go metrics_api_scaler.go; do
    echo "  - path: scalers/$f.txt"
    echo "    from: pkg/scalers/$f"
    echo "    sha256: $(sha256sum "$dest/scalers/$f.txt" | cut -d' ' -f1)"
  done
  echo "  - path: LICENSE"
  echo "    from: LICENSE"
  echo "licence: Apache-2.0"
} >"$dest/ORIGIN.yaml"
echo "third_party/keda: $module@$version"
