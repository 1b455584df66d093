#!/usr/bin/env bash
# The browser tests (tests/web) drive the system Chromium through Playwright (`playwright install`
# downloads a browser build of its own, which not every machine can). `make test` and `.ci/run`
# come here first: when `chromium` is missing and this can install it (root, apt-get), it does,
# quietly; otherwise it says how, and the browser tests fail with the same advice (never a skip).
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
advice="install it with: sudo apt-get install chromium (Debian, Ubuntu), or your system's package"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "no chromium on PATH: the browser tests (tests/web) will fail; $advice" >&2
  exit 0
fi
echo "installing chromium (Debian's package) for the browser tests ..."
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
  || echo "apt-get could not install chromium: the browser tests (tests/web) will fail; $advice" >&2
exit 0
