#!/usr/bin/env bash
# Self-signed CA + SuperLink server certificate for TLS (Flower's pattern, openssl only).
#
#   bash docker/generate-certs.sh OUT_DIR [NAME ...]
#   SUPERLINK_UID=49999 bash docker/generate-certs.sh OUT_DIR [NAME ...]   # for the containers
#
# OUT_DIR gets ca.crt, ca.key, server.pem, server.key (keys mode 600, see the end). The server
# certificate is valid for
# localhost, 127.0.0.1, ::1, the compose service name `superlink`, and every extra NAME
# (host names or IP addresses of the machine that runs the SuperLink). Existing files are
# never overwritten: if OUT_DIR already holds a certificate, the script checks that it covers
# every NAME asked for and fails, naming the missing ones, if it does not (remove OUT_DIR to
# regenerate). For production, use your own PKI.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT_DIR [SUPERLINK_HOST_OR_IP ...]" >&2
  exit 2
fi
out=$1
shift
command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 1; }
is_ip() { [[ $1 =~ ^[0-9.]+$ || $1 == *:* ]]; }
if [[ -e "$out/server.pem" ]]; then
  # the SANs of the existing certificate, e.g. "DNS:localhost,IPAddress:127.0.0.1"
  have=",$(openssl x509 -in "$out/server.pem" -noout -ext subjectAltName | tail -n +2 | tr -d ' \n'),"
  missing=()
  for name in "$@"; do
    if is_ip "$name"; then want="IPAddress:$name"; else want="DNS:$name"; fi
    [[ $have == *",$want,"* ]] || missing+=("$name")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "$out/server.pem exists but is not valid for: ${missing[*]} (it covers ${have:1:-1});" \
      "remove $out to regenerate" >&2
    exit 1
  fi
  echo "$out/server.pem exists and covers every name asked for; not overwriting" >&2
  exit 0
fi
mkdir -p "$out"

sans="DNS:localhost,DNS:superlink,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if is_ip "$name"; then
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
# private keys: owner only, and they stay yours (a process deployment, `immunefl deploy`).
# For a container deployment, SUPERLINK_UID=<uid> hands server.key to the container's user
# (`app`, uid 49999 in Flower's images; `immunefl deploy certs --container` sets it): only
# then, as root; otherwise run `sudo chown 49999 server.key`.
chmod 600 "$out/ca.key" "$out/server.key"
if [[ -n "${SUPERLINK_UID:-}" ]]; then
  chown "$SUPERLINK_UID" "$out/server.key"
fi
echo "certificates in $out (SANs: $sans)"
