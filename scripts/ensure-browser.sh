#!/usr/bin/env bash
# ensure-browser.sh — Debian's headless-capable Chromium for the dashboard's browser tests
# (tests/browser.py drives it with Playwright through executable_path=/usr/bin/chromium: the
# tests never download a browser build of their own). Installs the `chromium` package with
# apt-get when /usr/bin/chromium is missing; elsewhere prints what to install and fails.
# Fast when it is present. Called by ensure-services.sh (so `make test` has it) and by the tests.
set -euo pipefail

readonly BROWSER=/usr/bin/chromium

[[ -x $BROWSER ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: install Chromium at $BROWSER (Debian/Ubuntu package \`chromium\`)" >&2
    exit 1
fi
sudo_cmd=()
[[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
echo "ensure-browser: installing chromium"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
[[ -x $BROWSER ]] || { echo "ensure-browser: chromium installed but $BROWSER is missing" >&2; exit 1; }
