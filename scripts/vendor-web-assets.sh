#!/usr/bin/env bash
# vendor-web-assets.sh — re-fetch the dashboard's JavaScript and CSS from the npm registry into
# console/web/static/vendor/ (shipped as package data, so that the pages work with no internet).
#   uPlot  (charts)        dist/uPlot.iife.min.js, dist/uPlot.min.css, LICENSE
#   htmx   (live counters) dist/htmx.min.js, LICENSE
# Usage: scripts/vendor-web-assets.sh [UPLOT_VERSION] [HTMX_VERSION]
# Then update the versions and checksums in console/web/static/vendor/README.md.
set -euo pipefail

readonly UPLOT_VERSION="${1:-1.6.32}"
readonly HTMX_VERSION="${2:-2.0.11}"
readonly TARGET="$(cd "$(dirname "$0")/.." && pwd)/console/web/static/vendor"

command -v npm >/dev/null || { echo "vendor-web-assets: npm is needed (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "uplot@${UPLOT_VERSION}" "htmx.org@${HTMX_VERSION}" >/dev/null
mkdir uplot htmx
tar -xzf "uplot-${UPLOT_VERSION}.tgz" -C uplot
tar -xzf "htmx.org-${HTMX_VERSION}.tgz" -C htmx
mkdir -p "$TARGET"
cp uplot/package/dist/uPlot.iife.min.js uplot/package/dist/uPlot.min.css "$TARGET/"
cp uplot/package/LICENSE "$TARGET/uPlot.LICENSE"
cp htmx/package/dist/htmx.min.js "$TARGET/"
cp htmx/package/LICENSE "$TARGET/htmx.LICENSE"
cd "$TARGET"
sha256sum uPlot.iife.min.js uPlot.min.css htmx.min.js
echo "vendor-web-assets: uPlot ${UPLOT_VERSION} and htmx ${HTMX_VERSION} in ${TARGET}"
