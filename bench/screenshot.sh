#!/usr/bin/env bash
# screenshot.sh — writes docs/dashboard.png, the README's picture of the web
# dashboard, from a real run: a mamori on loopback with some LAN traffic, a
# newsletter stuck in the queue, a worm-like burst that the guard isolates
# and a ban; a headless Chromium (chromedp) logs in with the token, searches
# the queue and takes a 1280×900 screenshot (e2e TestDashboardScreenshot).
#
# Needs chromium, swaks and python3 (as the e2e tests; .ci/run installs
# them). Usage: bench/screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-docs/dashboard.png}")
rm -f "$out.tmp"
MAMORI_SCREENSHOT="$out.tmp" MAMORI_REQUIRE_TOOLS=1 \
  go test ./e2e -run '^TestDashboardScreenshot$' -count=1 -v
mv "$out.tmp" "$out"
echo "screenshot.sh: $out ($(stat -c %s "$out") bytes)"
