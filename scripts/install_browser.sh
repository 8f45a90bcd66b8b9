#!/usr/bin/env bash
# The headless browser for the hitl labeling-page test: Debian's Chromium at /usr/bin/chromium.
#
# Playwright (the Python package, pinned in the [hitl] extra) drives this system Chromium through
# executable_path; `playwright install` and its browser downloads are never used.
# Non-interactive; a no-op when /usr/bin/chromium is already there.  Needs root (or sudo) for apt-get.
#
# usage: scripts/install_browser.sh
set -euo pipefail
BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ]; then
    echo "galframe: $BROWSER is installed ($("$BROWSER" --version 2>/dev/null | head -n1))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "galframe: $BROWSER is missing and apt-get is not available: install Chromium with your package manager" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "galframe: installing Chromium needs root (apt-get); run this script as root" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
"$BROWSER" --version
