#!/usr/bin/env bash
# Self-signed CA + SuperLink server certificate for TLS (Flower's pattern, openssl only).
#
#   bash docker/generate-certs.sh OUT_DIR [NAME ...]
#
# OUT_DIR gets ca.crt, ca.key, server.pem, server.key (keys mode 600, see the end). The server
# certificate is valid for
# localhost, 127.0.0.1, ::1, the compose service name `superlink`, and every extra NAME
# (host names or IP addresses of the machine that runs the SuperLink). Existing files are
# never overwritten: remove OUT_DIR to regenerate. For production, use your own PKI.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT_DIR [SUPERLINK_HOST_OR_IP ...]" >&2
  exit 2
fi
out=$1
shift
if [[ -e "$out/server.pem" ]]; then
  echo "$out/server.pem exists; not overwriting (remove $out to regenerate)" >&2
  exit 0
fi
command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"

sans="DNS:localhost,DNS:superlink,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
    sans+=",IP:$name"
  else
    sans+=",DNS:$name"
  fi
done

openssl genrsa -out "$out/ca.key" 4096 2>/dev/null
openssl req -new -x509 -sha256 -key "$out/ca.key" -days 365 -subj "/CN=immunefl-ca" \
  -out "$out/ca.crt"
openssl genrsa -out "$out/server.key" 4096 2>/dev/null
openssl req -new -sha256 -key "$out/server.key" -subj "/CN=superlink" -out "$out/server.csr"
ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$sans" > "$ext"
openssl x509 -req -sha256 -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
  -CAcreateserial -days 365 -extfile "$ext" -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/ca.srl"
# private keys: owner only. The SuperLink container runs as `app` (uid 49999 in Flower's
# images) and must read server.key: as root, hand it to that uid (SUPERLINK_UID to change);
# otherwise it stays yours (for `immunefl deploy`); run `sudo chown 49999 server.key` for Docker.
chmod 600 "$out/ca.key" "$out/server.key"
if [[ "$(id -u)" -eq 0 ]]; then
  chown "${SUPERLINK_UID:-49999}" "$out/server.key"
fi
echo "certificates in $out (SANs: $sans)"
