#!/usr/bin/env bash
# install-agent.sh URL TOKEN
#
# Installs vmkit-agent on a fresh Debian/Ubuntu VM, enrolls it with the control plane
# at URL using the one-time enrollment TOKEN, and runs it under systemd:
#
#   curl -fsSL https://cp.example.com/install.sh | sudo bash -s -- https://cp.example.com vmkenr_...
#
# Steps: Node.js from the distribution, the agent bundle from URL/agent/bundle.tar.gz
# unpacked to /opt/vmkit-agent, `vmkit-agent enroll`, then the systemd unit
# (enabled and started). Without systemd (containers, the local VM sandbox) it says
# "systemd: skipped" and starts the daemon in the background instead.
#
# Why Node.js from the distribution rather than a bundled runtime: the agent runs as
# root on every VM, so its runtime must get security fixes the moment the distribution
# ships them (unattended-upgrades, the Debian/Ubuntu security teams), not when VMKit
# re-releases a tarball. The agent needs Node >= 18.19 (tsx registers through
# module.register); Debian 12 and Ubuntu 24.04 ship that. On older releases the script
# stops with a clear message instead of installing something half-working.
#
# Settings (environment, all optional; defaults are what the systemd unit uses):
#   VMKIT_AGENT_PREFIX        install directory            (/opt/vmkit-agent)
#   VMKIT_AGENT_CONFIG        agent config file            (/etc/vmkit/agent.json)
#   VMKIT_AGENT_STATE_DIR     keys, journal, replay cache  (/var/lib/vmkit-agent)
#   VMKIT_AGENT_LOG           daemon log without systemd   (/var/log/vmkit-agent.log)
#   VMKIT_AGENT_PIDFILE       daemon pid without systemd   (/run/vmkit-agent.pid)
#   VMKIT_CP_KEY              KEY_ID:PUBKEY the control plane must hold (--cp-key)
#   VMKIT_AGENT_INSECURE=1    allow plain http/ws to a non-local address (warned)
#   VMKIT_INSTALL_SKIP_APT=1  never call apt-get (Node and npm already present)
#   VMKIT_AGENT_NODE_MODULES  use this node_modules directory instead of `npm install`
#                             (the local sandbox, which has no registry access)

if [ -z "${BASH_VERSION:-}" ]; then
  echo "install-agent.sh: run it with bash: curl -fsSL URL/install.sh | sudo bash -s -- URL TOKEN" >&2
  exit 2
fi
set -euo pipefail

readonly UNIT_NAME=vmkit-agent.service
readonly DEFAULT_PREFIX=/opt/vmkit-agent
readonly DEFAULT_CONFIG=/etc/vmkit/agent.json
readonly DEFAULT_STATE_DIR=/var/lib/vmkit-agent

PREFIX="${VMKIT_AGENT_PREFIX:-$DEFAULT_PREFIX}"
CONFIG="${VMKIT_AGENT_CONFIG:-$DEFAULT_CONFIG}"
STATE_DIR="${VMKIT_AGENT_STATE_DIR:-$DEFAULT_STATE_DIR}"
LOG_FILE="${VMKIT_AGENT_LOG:-/var/log/vmkit-agent.log}"
PID_FILE="${VMKIT_AGENT_PIDFILE:-/run/vmkit-agent.pid}"

say() { printf 'vmkit-agent install: %s\n' "$*"; }
die() {
  printf 'vmkit-agent install: error: %s\n' "$*" >&2
  exit 1
}

if [ "$#" -ne 2 ]; then
  echo "usage: install-agent.sh URL TOKEN" >&2
  exit 2
fi
URL="${1%/}"
TOKEN="$2"
case "$URL" in
  https://* | http://*) ;;
  *) die "URL must start with https:// (or http:// for a local control plane): $URL" ;;
esac
case "$TOKEN" in
  '' | *[!A-Za-z0-9_.~-]*) die "TOKEN must be the enrollment token (vmkenr_...)" ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (the agent manages users and sshd)"

apt_install() {
  if [ "${VMKIT_INSTALL_SKIP_APT:-0}" = 1 ]; then
    die "missing $*, and VMKIT_INSTALL_SKIP_APT=1 forbids installing it"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing $*; this script supports Debian and Ubuntu (apt-get)"
  say "installing $* from the distribution"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  local v major minor
  v="$(node --version)"
  v="${v#v}"
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%.*}"
  [ "$major" -gt 18 ] || { [ "$major" -eq 18 ] && [ "$minor" -ge 19 ]; }
}

# --- 1. runtime -------------------------------------------------------------------
if ! node_ok; then
  apt_install nodejs ca-certificates
  node_ok || die "Node.js >= 18.19 is needed; this distribution ships $(node --version 2>/dev/null || echo none). Use Debian 12+ or Ubuntu 24.04+."
fi
if [ -z "${VMKIT_AGENT_NODE_MODULES:-}" ] && ! command -v npm >/dev/null 2>&1; then
  apt_install npm
fi
if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
  apt_install curl ca-certificates
fi
NODE="$(command -v node)"
say "node $("$NODE" --version) at $NODE"

# --- 2. bundle --------------------------------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
BUNDLE_URL="$URL/agent/bundle.tar.gz"
say "downloading $BUNDLE_URL"
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 3 --proto '=https,http' -o "$WORK/bundle.tar.gz" "$BUNDLE_URL"
else
  wget -q -O "$WORK/bundle.tar.gz" "$BUNDLE_URL"
fi

# Unpack next to the old install and swap at the end, so a failed upgrade leaves the
# running agent untouched.
STAGE="$PREFIX.new"
rm -rf "$STAGE"
mkdir -p "$STAGE"
tar -xzf "$WORK/bundle.tar.gz" -C "$STAGE" --strip-components=1 --no-same-owner
[ -f "$STAGE/vmkit-agent/bin/vmkit-agent.js" ] || die "the bundle has no vmkit-agent/bin/vmkit-agent.js"

if [ -n "${VMKIT_AGENT_NODE_MODULES:-}" ]; then
  [ -d "$VMKIT_AGENT_NODE_MODULES" ] || die "VMKIT_AGENT_NODE_MODULES=$VMKIT_AGENT_NODE_MODULES is not a directory"
  ln -s "$VMKIT_AGENT_NODE_MODULES" "$STAGE/node_modules"
  say "node_modules: linked to $VMKIT_AGENT_NODE_MODULES"
else
  say "installing dependencies (npm)"
  # --ignore-scripts: no package runs code as root at install time. esbuild (tsx)
  # finds its binary through its optional dependency without its install script;
  # node-pty (operator shells) is compiled below only where a compiler exists.
  (cd "$STAGE" && npm install --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
  if command -v make >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
    (cd "$STAGE" && npm rebuild node-pty --loglevel=error) || say "node-pty: build failed; operator shells will be unavailable"
  else
    say "node-pty: not built (no make/g++/python3); operator shells will be unavailable until it is"
  fi
fi

if [ -e "$PREFIX" ]; then
  rm -rf "$PREFIX.old"
  mv "$PREFIX" "$PREFIX.old"
fi
mv "$STAGE" "$PREFIX"
rm -rf "$PREFIX.old"
AGENT=("$NODE" "$PREFIX/vmkit-agent/bin/vmkit-agent.js")
say "installed $("${AGENT[@]}" version) in $PREFIX"

# --- 3. enrollment ----------------------------------------------------------------
if [ -f "$CONFIG" ]; then
  say "already enrolled ($CONFIG exists); keeping that identity, the token is not used"
else
  enroll_args=(enroll --url "$URL" --config "$CONFIG" --state-dir "$STATE_DIR")
  if [ -n "${VMKIT_CP_KEY:-}" ]; then enroll_args+=(--cp-key "$VMKIT_CP_KEY"); fi
  if [ "${VMKIT_AGENT_INSECURE:-0}" = 1 ]; then enroll_args+=(--insecure); fi
  # The token travels in the environment, not argv: /proc/<pid>/environ is root-only,
  # the command line is not.
  VMKIT_ENROLLMENT_TOKEN="$TOKEN" "${AGENT[@]}" "${enroll_args[@]}"
fi

# --- 4. service -------------------------------------------------------------------
run_args=(run --config "$CONFIG" --state-dir "$STATE_DIR")
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  UNIT_SRC="$PREFIX/scripts/$UNIT_NAME"
  [ -f "$UNIT_SRC" ] || die "the bundle has no scripts/$UNIT_NAME"
  install -m 0644 "$UNIT_SRC" "/etc/systemd/system/$UNIT_NAME"
  DROPIN="/etc/systemd/system/$UNIT_NAME.d/10-paths.conf"
  if [ "$PREFIX" != "$DEFAULT_PREFIX" ] || [ "$CONFIG" != "$DEFAULT_CONFIG" ] || [ "$STATE_DIR" != "$DEFAULT_STATE_DIR" ]; then
    mkdir -p "$(dirname "$DROPIN")"
    {
      echo "# Written by install-agent.sh: non-default paths."
      echo "[Service]"
      echo "WorkingDirectory=$PREFIX"
      echo "ExecStart="
      echo "ExecStart=${AGENT[*]} ${run_args[*]}"
    } >"$DROPIN"
  else
    rm -f "$DROPIN"
  fi
  systemctl daemon-reload
  systemctl enable "$UNIT_NAME"
  systemctl restart "$UNIT_NAME"
  say "systemd: $UNIT_NAME enabled and started"
else
  say "systemd: skipped (no systemd on this machine); starting the daemon in the background"
  if [ -f "$PID_FILE" ]; then
    old="$(cat "$PID_FILE")"
    case "$old" in
      '' | *[!0-9]*) ;;
      *) if kill -0 "$old" 2>/dev/null; then kill "$old" || true; fi ;;
    esac
  fi
  mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"
  (cd "$PREFIX" && exec nohup "${AGENT[@]}" "${run_args[@]}" </dev/null >>"$LOG_FILE" 2>&1) &
  echo "$!" >"$PID_FILE"
  say "daemon pid $(cat "$PID_FILE"), log $LOG_FILE"
fi

# --- 5. first connection ----------------------------------------------------------
for _ in $(seq 1 20); do
  if "${AGENT[@]}" status --config "$CONFIG" --state-dir "$STATE_DIR" >/dev/null 2>&1; then
    say "connected"
    "${AGENT[@]}" status --config "$CONFIG" --state-dir "$STATE_DIR"
    exit 0
  fi
  sleep 0.5
done
say "not connected yet; check: ${AGENT[*]} status --config $CONFIG"
"${AGENT[@]}" status --config "$CONFIG" --state-dir "$STATE_DIR" || true
