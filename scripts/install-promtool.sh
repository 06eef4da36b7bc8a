#!/usr/bin/env bash
# Makes `promtool` available (it checks and unit-tests monitoring/alerts.yaml): does nothing when it
# is on PATH already, otherwise installs Debian's `prometheus` package, which ships it. Needs root
# (or password-less sudo) and apt. Idempotent; prints where promtool is.
#
# The package also carries the Prometheus server and enables its service. Only promtool is wanted:
# while installing, a policy-rc.d (when none exists) keeps the service from being started, and
# recommended packages (node-exporter) are not installed.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "install-promtool: promtool is missing; install Debian's prometheus package as root (apt-get install prometheus)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-promtool: promtool is missing and apt-get is not available; install promtool (Prometheus >= 2.42) on PATH" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
guarded=false
if [[ ! -e $policy ]]; then
  "${as_root[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
  guarded=true
fi
cleanup() { if [[ $guarded == true ]]; then "${as_root[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

echo "install-promtool: installing Debian's prometheus package for promtool" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >&2
command -v promtool
