#!/usr/bin/env bash
# ensure-system-packages.sh — the system libraries Conveyor's Python packages load:
# WeasyPrint (PDF reports) needs Pango, HarfBuzz and a font; jq serves the autoscaling script. Installs what is missing with
# apt-get (Debian/Ubuntu); elsewhere prints what to install. Fast when all are present.
set -euo pipefail

# jq: deploy/kubernetes/queue-latency-metric.sh (the autoscaling signal) and its tests.
readonly PACKAGES=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core jq)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-packages: install these for PDF reports: ${missing[*]}" >&2
    exit 0
fi
sudo_cmd=()
[[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
echo "ensure-system-packages: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
