#!/usr/bin/env bash
# `npm test`'s pretest: the suite drives Debian's chromium (e2e), nginx (gateway test), prometheus and
# promtool (the operations kit), varnish (the CDN stand-in of the purge test) and starts its own redis-server instances (single, Cluster via
# redis-cli, Sentinel via redis-server --sentinel).
# Install whichever is missing, or stop with one clear line.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || need+=(prometheus)
command -v varnishd >/dev/null 2>&1 || [ -x /usr/sbin/varnishd ] || need+=(varnish)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "pretest: installing ${need[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "pretest: the tests need ${need[*]} (Debian: sudo apt-get install -y ${need[*]}); install them, then run npm test again" >&2
exit 1
