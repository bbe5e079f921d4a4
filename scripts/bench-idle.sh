#!/usr/bin/env bash
# Idle cost of a running worker: RSS and CPU time of `gpu-worker run` polling
# an idle local project every second for a minute.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/project/gpu_jobs"
printf 'version: 1\njobs: []\n' > "$tmp/project/gpu_jobs/manifest.yaml"
"$root/bin/gpu-worker" run --project-dir "$tmp/project" --work-dir "$tmp/work" \
  --loop-interval 1 --allow-cpu --python /bin/false >"$tmp/log" 2>&1 &
pid=$!
sleep 3
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
sleep "$secs"
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" -v rss="$rss" -v hwm="$hwm" 'BEGIN{
  printf "idle worker over %ds (1 scan/s): CPU %.2f%% of one core, RSS %.1f MiB (peak %.1f MiB)\n", s, (b-a)/hz/s*100, rss/1024, hwm/1024 }'
