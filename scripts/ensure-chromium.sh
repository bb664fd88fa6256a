#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the console's browser tests, when
# they are missing and this user may install packages (root, or password-less sudo).
# Otherwise say so: the browser tests then skip, naming this script.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-chromium: no apt-get here; install chromium and chromedriver to run the browser tests" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no sudo; the browser tests will be skipped" >&2
    exit 0
  fi
fi
echo "ensure-chromium: installing Debian's chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q chromium chromium-driver >/dev/null
}
