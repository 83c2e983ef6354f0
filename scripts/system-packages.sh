#!/usr/bin/env bash
# System packages some test tiers use (Debian). Run as root; CI calls it before the tests.
# Each tier's tests skip with a reason when its package is missing on a developer machine.
set -euo pipefail
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "system-packages: not root or no apt-get; skipping (tests that need them will skip)"
  exit 0
fi
packages=(chromium postgresql)
export DEBIAN_FRONTEND=noninteractive
if [ ${#packages[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
