#!/usr/bin/env bash
# ensure-system-packages.sh — the system libraries Conveyor's Python packages load:
# WeasyPrint (PDF reports) needs Pango, HarfBuzz and a font; jq serves the autoscaling script.
# The tests also need Prometheus (`prometheus` and `promtool`); its system service is never
# started: the tests run their own instances. Installs what is missing with apt-get
# (Debian/Ubuntu); elsewhere prints what to install. Fast when all are present.
set -euo pipefail

# jq: deploy/kubernetes/queue-latency-metric.sh (the autoscaling signal) and its tests.
readonly PACKAGES=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core jq)
# Test tools only, not in the image: tests/prometheus.py and tests/unit/test_prometheus_rules.py
# (prometheus); the replicas on network-namespace hosts, tests/integration/test_netns_hosts.py
# (iproute2's ip, socat).
readonly TEST_TOOLS=(prometheus iproute2 socat)

missing=()
for package in "${PACKAGES[@]}" "${TEST_TOOLS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-packages: install these (PDF reports, tests): ${missing[*]}" >&2
    exit 0
fi
sudo_cmd=()
[[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
echo "ensure-system-packages: installing ${missing[*]}"
# Debian starts a package's service on install unless policy-rc.d says no: keep Prometheus's
# off while installing, with a temporary policy when the machine has none.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    trap '"${sudo_cmd[@]}" rm -f "$policy"' EXIT
fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
