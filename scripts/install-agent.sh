#!/usr/bin/env bash
# install-agent.sh URL TOKEN
#
# Installs vmkit-agent on a Linux VM, enrolls it with the control plane at URL using the
# one-time enrollment TOKEN, and runs it under systemd:
#
#   curl -fsSL https://cp.example.com/install.sh | sudo VMKIT_CP_KEY=ed25519:...:... bash -s -- https://cp.example.com vmkenr_...
#
# A fleet whose processes are each at their own address, behind a private CA:
#
#   curl -fsSL --cacert ca.pem https://cp-a.example.com/install.sh |
#     sudo VMKIT_CP_KEY=... VMKIT_CA_FILE=$PWD/ca.pem \
#       VMKIT_CP_URLS="https://cp-b.example.com https://cp-c.example.com" \
#       bash -s -- https://cp-a.example.com vmkenr_...
#
# The agent is one executable (Node 24 inside): nothing is installed from a package
# registry and nothing is compiled. Steps:
#   1. the release manifest from URL/agent/releases/<version>/<platform> (or, while that
#      cannot be downloaded, from each of VMKIT_CP_URLS in turn): its Ed25519
#      signature must verify under VMKIT_CP_KEY, the control plane's signing key given
#      out of band (the enrollment-token answer prints the full command with it);
#   2. the executable: its size and sha-256 must be the manifest's. Nothing downloaded
#      runs before both checks passed; a refusal changes nothing on the machine;
#   3. /opt/vmkit-agent/versions/<version>/vmkit-agent, and /opt/vmkit-agent/current
#      pointing at it (switched with one rename);
#   4. `vmkit-agent enroll` (pins VMKIT_CP_KEY; --url URL and one --url per VMKIT_CP_URLS;
#      --ca-file with VMKIT_CA_FILE's copy), then the systemd unit the executable
#      carries, enabled and started. Without systemd (containers, the local VM sandbox)
#      a small restart loop stands in for Restart=always (it stops on exit 78, a
#      configuration error, as RestartPreventExitStatus does).
#
# Needs: bash, curl or wget, sha256sum, base64, openssl >= 3.0 (Ed25519 verification;
# Debian 12, Ubuntu 22.04 and later ship it), uname, setsid.
#
# Settings (environment; defaults are what the systemd unit uses):
#   VMKIT_CP_KEY              KEY_ID:PUBKEY of the control plane (required)
#   VMKIT_CP_URLS             more addresses of the same fleet, space-separated (none);
#                             each https:// (http:// as URL); enroll asks them in turn after
#                             URL, the agent keeps them as connect_urls and dials them in turn
#   VMKIT_CA_FILE             PEM CA(s) trusted instead of the system's roots (system roots):
#                             for this script's downloads (curl --cacert, wget
#                             --ca-certificate) and, copied to ca.pem beside the agent config
#                             (root's, 0644), for the agent (enroll --ca-file, kept as ca_file)
#   VMKIT_AGENT_VERSION       release to install                (latest)
#   VMKIT_AGENT_PREFIX        install directory                 (/opt/vmkit-agent)
#   VMKIT_AGENT_CONFIG        agent config file                 (/etc/vmkit/agent.json)
#   VMKIT_AGENT_STATE_DIR     keys, journal, replay cache       (/var/lib/vmkit-agent)
#   VMKIT_AGENT_LOG           daemon log without systemd        (/var/log/vmkit-agent.log)
#   VMKIT_AGENT_PIDFILE       restart loop's pid without systemd (/run/vmkit-agent.pid)
#   VMKIT_AGENT_INSECURE=1    allow plain http/ws to a non-local address (warned)
#   VMKIT_INSTALL_SKIP_APT=1  never call apt-get

if [ -z "${BASH_VERSION:-}" ]; then
  echo "install-agent.sh: run it with bash: curl -fsSL URL/install.sh | sudo bash -s -- URL TOKEN" >&2
  exit 2
fi
set -euo pipefail

readonly UNIT_NAME=vmkit-agent.service
readonly DEFAULT_PREFIX=/opt/vmkit-agent
readonly DEFAULT_CONFIG=/etc/vmkit/agent.json
readonly DEFAULT_STATE_DIR=/var/lib/vmkit-agent
# DER header of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
readonly ED25519_SPKI_PREFIX='\060\052\060\005\006\003\053\145\160\003\041\000'
readonly SIGNING_CONTEXT='vmkit-agent-release-v1'

PREFIX="${VMKIT_AGENT_PREFIX:-$DEFAULT_PREFIX}"
CONFIG="${VMKIT_AGENT_CONFIG:-$DEFAULT_CONFIG}"
STATE_DIR="${VMKIT_AGENT_STATE_DIR:-$DEFAULT_STATE_DIR}"
LOG_FILE="${VMKIT_AGENT_LOG:-/var/log/vmkit-agent.log}"
PID_FILE="${VMKIT_AGENT_PIDFILE:-/run/vmkit-agent.pid}"
WANT_VERSION="${VMKIT_AGENT_VERSION:-latest}"

say() { printf 'vmkit-agent install: %s\n' "$*"; }
die() {
  printf 'vmkit-agent install: error: %s\n' "$*" >&2
  exit 1
}

if [ "$#" -ne 2 ]; then
  echo "usage: install-agent.sh URL TOKEN   (more URLs: VMKIT_CP_URLS=\"URL2 URL3\")" >&2
  exit 2
fi
# check_url NAME URL: the agent's enroll refuses http:// to anything but loopback and
# link-local (unless VMKIT_AGENT_INSECURE=1); a list separator (a comma) is refused here.
check_url() {
  case "$2" in
    https://?* | http://?*) ;;
    *) die "$1 must start with https:// (or http:// for a local control plane): $2" ;;
  esac
  case "$2" in
    *[!A-Za-z0-9.:/_~%[\]-]*) die "$1 has a character no control-plane URL needs (VMKIT_CP_URLS is separated by spaces): $2" ;;
  esac
}
URL="${1%/}"
TOKEN="$2"
check_url URL "$URL"
case "$TOKEN" in
  '' | *[!A-Za-z0-9_.~-]*) die "TOKEN must be the enrollment token (vmkenr_...)" ;;
esac
URLS=("$URL")
# -d '': the whole value, newlines included, split on whitespace (no globbing with -a).
read -r -d '' -a more_urls <<<"${VMKIT_CP_URLS:-}" || true
for u in "${more_urls[@]}"; do
  check_url VMKIT_CP_URLS "$u"
  URLS+=("${u%/}")
done
# The agent's own limit (MAX_CONTROL_PLANE_URLS): refused here before anything changes.
[ "${#URLS[@]}" -le 8 ] || die "${#URLS[@]} control-plane URLs given (URL and VMKIT_CP_URLS); at most 8"
CA_FILE="${VMKIT_CA_FILE:-}"
if [ -n "$CA_FILE" ]; then
  { [ -f "$CA_FILE" ] && [ -r "$CA_FILE" ]; } || die "VMKIT_CA_FILE $CA_FILE is not a readable file"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_FILE" || die "VMKIT_CA_FILE $CA_FILE holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
  [ "$(stat -c %s "$CA_FILE")" -le 1048576 ] || die "VMKIT_CA_FILE $CA_FILE is larger than 1 MiB, the agent's limit for ca_file"
fi
CP_KEY="${VMKIT_CP_KEY:-}"
[[ "$CP_KEY" =~ ^(ed25519:[0-9a-f]{32}):([A-Za-z0-9_-]{43})$ ]] ||
  die "VMKIT_CP_KEY must be the control plane's signing key, KEY_ID:PUBLIC_KEY (the enrollment-token answer's install_command carries it); without it nothing can be verified"
KEY_ID="${BASH_REMATCH[1]}"
KEY_B64URL="${BASH_REMATCH[2]}"
[[ "$WANT_VERSION" =~ ^(latest|[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)$ ]] || die "VMKIT_AGENT_VERSION must be a version like 1.2.3, or latest"
[ "$(id -u)" -eq 0 ] || die "run as root (the agent manages users and sshd)"

apt_install() {
  if [ "${VMKIT_INSTALL_SKIP_APT:-0}" = 1 ]; then
    die "missing $*, and VMKIT_INSTALL_SKIP_APT=1 forbids installing it"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing $*; install it (this script installs it itself only with apt-get)"
  say "installing $* from the distribution"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# --- 0. tools and platform ----------------------------------------------------------
if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
  apt_install curl ca-certificates
fi
openssl_ok() {
  command -v openssl >/dev/null 2>&1 || return 1
  local v
  v="$(openssl version 2>/dev/null || true)"
  [[ "$v" =~ ^OpenSSL\ ([3-9]|[1-9][0-9])\. ]]
}
openssl_ok || apt_install openssl
openssl_ok || die "OpenSSL 3.0 or later is needed to verify the release signature (Ed25519); found: $(openssl version 2>/dev/null || echo none)"
for tool in sha256sum base64 setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool (coreutils / util-linux)"
done

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-amd64) PLATFORM=linux-x64 ;;
  Linux-aarch64 | Linux-arm64) PLATFORM=linux-arm64 ;;
  *) die "no vmkit-agent release for $(uname -s) $(uname -m)" ;;
esac

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# As the agent's ca_file: the private CA instead of the system's roots, not beside them.
curl_tls=()
wget_tls=()
if [ -n "$CA_FILE" ]; then
  curl_tls=(--cacert "$CA_FILE")
  wget_tls=("--ca-certificate=$CA_FILE")
fi

# fetch URL FILE MAX_BYTES: refuses bodies larger than MAX_BYTES (also chunked ones).
# Returns 1 with the reason on stderr; the caller decides whether that is the end.
fetch() {
  if command -v curl >/dev/null 2>&1; then
    if ! curl -fsSL --retry 3 --proto '=https,http' --max-redirs 0 --max-filesize "$3" "${curl_tls[@]}" -o "$2" "$1"; then
      printf 'vmkit-agent install: download of %s failed or was larger than %s bytes\n' "$1" "$3" >&2
      return 1
    fi
  else
    if ! wget -q --max-redirect=0 "${wget_tls[@]}" -O "$2" "$1"; then
      printf 'vmkit-agent install: download of %s failed\n' "$1" >&2
      return 1
    fi
  fi
  local got
  got="$(stat -c %s "$2")"
  if [ "$got" -gt "$3" ]; then
    printf 'vmkit-agent install: %s is %s bytes, more than the %s expected; refusing it\n' "$1" "$got" "$3" >&2
    return 1
  fi
}

# --- 1. the signed manifest ----------------------------------------------------------
# From the first control plane that serves it; the executable then comes from the same one.
BASE=''
for u in "${URLS[@]}"; do
  say "release manifest: $u/agent/releases/$WANT_VERSION/$PLATFORM"
  if fetch "$u/agent/releases/$WANT_VERSION/$PLATFORM" "$WORK/manifest.json" 4096; then
    BASE="$u"
    break
  fi
done
[ -n "$BASE" ] || die "no control plane served the release manifest (${URLS[*]})"
MANIFEST="$(tr -d '\n' <"$WORK/manifest.json")"
field() {
  local re="\"$1\":$2"
  [[ "$MANIFEST" =~ $re ]] || die "the release manifest has no valid $1"
  printf '%s' "${BASH_REMATCH[1]}"
}
VERSION="$(field version '"([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)"')"
M_PLATFORM="$(field platform '"(linux-x64|linux-arm64)"')"
SHA256="$(field sha256 '"([0-9a-f]{64})"')"
SIZE="$(field size '([1-9][0-9]{0,9})')"
M_KEY_ID="$(field key_id '"(ed25519:[0-9a-f]{32})"')"
SIGNATURE="$(field signature '"([A-Za-z0-9_-]{86})"')"
[ "$M_PLATFORM" = "$PLATFORM" ] || die "the manifest is for $M_PLATFORM, this machine is $PLATFORM"
[ "$WANT_VERSION" = latest ] || [ "$VERSION" = "$WANT_VERSION" ] || die "asked for $WANT_VERSION, the manifest is for $VERSION"
[ "$SIZE" -le 536870912 ] || die "the manifest announces $SIZE bytes, over the 512 MiB any release may have"
[ "$M_KEY_ID" = "$KEY_ID" ] || die "the manifest is signed by $M_KEY_ID, not by VMKIT_CP_KEY $KEY_ID; refusing it"

b64url_decode() {
  local s="${1//-/+}"
  s="${s//_//}"
  while [ $((${#s} % 4)) -ne 0 ]; do s="$s="; done
  printf '%s' "$s" | base64 -d
}
# The key: raw 32 bytes after the SPKI header; its id is the first 16 bytes of its sha-256.
printf '%b' "$ED25519_SPKI_PREFIX" >"$WORK/key.der"
b64url_decode "$KEY_B64URL" >>"$WORK/key.der"
[ "$(stat -c %s "$WORK/key.der")" -eq 44 ] || die "VMKIT_CP_KEY's public key is not 32 bytes"
derived="ed25519:$(tail -c 32 "$WORK/key.der" | sha256sum | cut -c1-32)"
[ "$derived" = "$KEY_ID" ] || die "VMKIT_CP_KEY's public key does not match its key id $KEY_ID"
b64url_decode "$SIGNATURE" >"$WORK/manifest.sig"
# The signed bytes: the context line, then the canonical JSON (RFC 8785) of the four fields.
printf '%s\n{"platform":"%s","sha256":"%s","size":%s,"version":"%s"}' "$SIGNING_CONTEXT" "$M_PLATFORM" "$SHA256" "$SIZE" "$VERSION" >"$WORK/manifest.signed"
openssl pkeyutl -verify -pubin -keyform DER -inkey "$WORK/key.der" -rawin -in "$WORK/manifest.signed" -sigfile "$WORK/manifest.sig" >/dev/null 2>&1 ||
  die "the release manifest's signature does not verify under $KEY_ID; refusing it"
say "manifest of vmkit-agent $VERSION for $PLATFORM: signature verified under $KEY_ID"

# --- 2. the executable ---------------------------------------------------------------
ARTIFACT_URL="$BASE/agent/releases/$VERSION/$PLATFORM/vmkit-agent"
say "downloading $ARTIFACT_URL ($SIZE bytes)"
fetch "$ARTIFACT_URL" "$WORK/vmkit-agent" "$SIZE" || die "the executable could not be downloaded from $BASE; nothing was changed"
got_size="$(stat -c %s "$WORK/vmkit-agent")"
[ "$got_size" -eq "$SIZE" ] || die "the download is $got_size bytes, the signed manifest says $SIZE; refusing it"
got_sha="$(sha256sum "$WORK/vmkit-agent" | cut -d' ' -f1)"
[ "$got_sha" = "$SHA256" ] || die "the download's sha-256 is $got_sha, the signed manifest says $SHA256; refusing it"
chmod 0755 "$WORK/vmkit-agent"
reported="$("$WORK/vmkit-agent" version)" || die "the verified executable does not run on this machine"
case "$reported" in
  "vmkit-agent $VERSION "*) ;;
  *) die "the executable says \"$reported\", expected vmkit-agent $VERSION" ;;
esac
say "verified: size, sha-256 $SHA256, $reported"

# --- 3. install -----------------------------------------------------------------------
mkdir -p "$PREFIX/versions"
chmod 0755 "$PREFIX" "$PREFIX/versions"
DEST="$PREFIX/versions/$VERSION"
if [ -f "$DEST/vmkit-agent" ] && [ "$(sha256sum "$DEST/vmkit-agent" | cut -d' ' -f1)" = "$SHA256" ]; then
  say "$DEST already holds this release"
else
  STAGE="$PREFIX/versions/.$VERSION.$$"
  rm -rf "$STAGE"
  mkdir -m 0755 "$STAGE"
  mv "$WORK/vmkit-agent" "$STAGE/vmkit-agent"
  rm -rf "$DEST"
  mv -T "$STAGE" "$DEST"
fi
ln -sfn "versions/$VERSION" "$PREFIX/.current.$$"
mv -Tf "$PREFIX/.current.$$" "$PREFIX/current"
AGENT="$PREFIX/current/vmkit-agent"
say "installed $("$AGENT" version) in $DEST ($PREFIX/current)"

# --- 4. enrollment ----------------------------------------------------------------------
if [ -f "$CONFIG" ]; then
  say "already enrolled ($CONFIG exists); keeping that identity, the token is not used"
  # Its control planes and ca_file stay as enrolled (a new ca.pem would change what the
  # running agent trusts under its feet).
  if [ "${#URLS[@]}" -gt 1 ] || [ -n "$CA_FILE" ]; then say "VMKIT_CP_URLS and VMKIT_CA_FILE were used for the download only"; fi
else
  enroll_args=(enroll)
  for u in "${URLS[@]}"; do enroll_args+=(--url "$u"); done
  enroll_args+=(--config "$CONFIG" --state-dir "$STATE_DIR" --cp-key "$CP_KEY")
  if [ -n "$CA_FILE" ]; then
    # The agent reads ca_file at every start and for every update, so it gets its own
    # copy where its config lives (/etc/vmkit/ca.pem by default): root's, as the config
    # is, and not the operator's upload that may be in /tmp or a home directory; 0644 as
    # a certificate is public.
    CONFIG_DIR="$(dirname "$CONFIG")"
    CA_COPY="$CONFIG_DIR/ca.pem"
    [ -d "$CONFIG_DIR" ] || install -d -m 0755 "$CONFIG_DIR"
    install -m 0644 -o 0 -g 0 "$CA_FILE" "$CA_COPY.$$"
    mv -f "$CA_COPY.$$" "$CA_COPY"
    say "trusting the CA(s) of $CA_FILE, copied to $CA_COPY"
    enroll_args+=(--ca-file "$CA_COPY")
  fi
  if [ "${VMKIT_AGENT_INSECURE:-0}" = 1 ]; then enroll_args+=(--insecure); fi
  # The token travels in the environment, not argv: /proc/<pid>/environ is root-only,
  # the command line is not.
  VMKIT_ENROLLMENT_TOKEN="$TOKEN" "$AGENT" "${enroll_args[@]}"
fi

# --- 5. service ---------------------------------------------------------------------------
run_args=(run --config "$CONFIG" --state-dir "$STATE_DIR")
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  "$AGENT" print-unit >"$WORK/$UNIT_NAME"
  install -m 0644 "$WORK/$UNIT_NAME" "/etc/systemd/system/$UNIT_NAME"
  DROPIN="/etc/systemd/system/$UNIT_NAME.d/10-paths.conf"
  if [ "$PREFIX" != "$DEFAULT_PREFIX" ] || [ "$CONFIG" != "$DEFAULT_CONFIG" ] || [ "$STATE_DIR" != "$DEFAULT_STATE_DIR" ]; then
    mkdir -p "$(dirname "$DROPIN")"
    {
      echo "# Written by install-agent.sh: non-default paths."
      echo "[Service]"
      echo "ExecStart="
      echo "ExecStart=$AGENT ${run_args[*]}"
    } >"$DROPIN"
  else
    rm -f "$DROPIN"
  fi
  systemctl daemon-reload
  systemctl enable "$UNIT_NAME"
  systemctl restart "$UNIT_NAME"
  say "systemd: $UNIT_NAME enabled and started"
else
  say "systemd: skipped (no systemd on this machine); starting the daemon under a restart loop"
  if [ -f "$PID_FILE" ]; then
    old="$(cat "$PID_FILE")"
    case "$old" in
      '' | *[!0-9]*) ;;
      # The loop leads its own process group: the group goes, agent included.
      *) if kill -0 "$old" 2>/dev/null; then kill -TERM -- "-$old" 2>/dev/null || kill "$old" || true; fi ;;
    esac
  fi
  mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"
  # Restart=always stand-in: `current` is resolved at each start, so an update or a
  # rollback (the agent switches `current` and exits) starts the right version.
  # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
  loop='while :; do "$1" run --config "$2" --state-dir "$3"; rc=$?; [ "$rc" -eq 78 ] && exit 78; sleep 1; done'
  setsid nohup bash -c "$loop" vmkit-agent-loop "$AGENT" "$CONFIG" "$STATE_DIR" </dev/null >>"$LOG_FILE" 2>&1 &
  echo "$!" >"$PID_FILE"
  say "restart loop pid $(cat "$PID_FILE"), log $LOG_FILE"
fi

# --- 6. first connection ------------------------------------------------------------------
for _ in $(seq 1 40); do
  if "$AGENT" status --config "$CONFIG" --state-dir "$STATE_DIR" >/dev/null 2>&1; then
    say "connected"
    "$AGENT" status --config "$CONFIG" --state-dir "$STATE_DIR"
    exit 0
  fi
  sleep 0.5
done
say "not connected yet; check: $AGENT status --config $CONFIG"
"$AGENT" status --config "$CONFIG" --state-dir "$STATE_DIR" || true
