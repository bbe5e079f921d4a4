#!/usr/bin/env bash
# System packages the worker, its tests and the demo need: ffmpeg (audio),
# espeak-ng (speech), diatheke + sword-text-web (the World English Bible text
# of the demo), node + npm (the Codex editor's merge the codex tests run),
# prometheus (the dashboard and autoscaling queries are tested against a real
# server; installed without its recommended node exporter).
# Installs only what is missing.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v diatheke >/dev/null || missing+=(diatheke)
[ -d /usr/share/sword/modules/texts/ztext/engWEB2015eb ] || missing+=(sword-text-web)
command -v git >/dev/null || missing+=(git)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
lean=()
command -v prometheus >/dev/null || lean+=(prometheus)
if [ ${#missing[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  if [ ${#lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${lean[@]}"
  fi
fi
