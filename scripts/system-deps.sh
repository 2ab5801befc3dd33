#!/usr/bin/env bash
# Debian packages the tests need: the stock adb client (proves the simulated adbd speaks the real
# protocol), libusb-1.0 (adb-shell's USB transport) and OpenSSH (the SSH tests start a real sshd on
# loopback and use ssh-keygen). Installed only when missing and when we can.
set -euo pipefail
missing=()
for pkg in adb libusb-1.0-0 openssh-server openssh-client; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]}); tests that need them are skipped" >&2
fi
