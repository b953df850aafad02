#!/usr/bin/env bash
# Makes the TLS material of a Sealbus cluster with openssl (ECDSA P-256):
#
#   client CA      signs each node's server certificate: the NATS client port
#                  and the HTTPS control plane (clients and membershipd trust it)
#   route CA       signs each node's route certificate, used in both directions
#                  between nodes (mutual TLS). A separate CA, so a certificate
#                  made for a client is never accepted on a route port.
#
# usage: certs.sh [--renew] OUT_DIR NAME=SAN[,SAN...] [NAME=SAN...]
#   SANs are DNS names or IP addresses; include 127.0.0.1 (and localhost) so
#   membershipd and `membershipd user` on the node itself can verify it.
#   example: certs.sh /etc/sealbus/tls n1=n1.example.internal,10.0.0.11,127.0.0.1,localhost
#
# Writes OUT_DIR/{client-ca,route-ca}.{crt,key}, OUT_DIR/NAME.{crt,key} and
# OUT_DIR/NAME-route.{crt,key}. Existing files are kept (re-running adds new
# nodes only); keys are 0600, the directory 0700. OUT_DIR and its parent
# must be yours (or root's) and writable by nobody else, with no links or
# foreign files in OUT_DIR: otherwise it refuses (exit 2), writing nothing.
#
# --renew issues new certificates (and keys) for the named nodes, both the
# server and the route one, signed by the existing CAs (never re-made here:
# clients and peers keep trusting them). Each pair replaces the old one by
# rename, key first. Then install them and reload the node
# (`systemctl reload sealbus-membershipd`, i.e. SIGHUP): no restart.
set -euo pipefail

renew=0
if [ "${1:-}" = --renew ]; then
  renew=1
  shift
fi
if [ $# -lt 2 ]; then
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
command -v openssl >/dev/null || { echo "certs.sh: openssl is required" >&2; exit 1; }

out=$1
shift
# OUT_DIR holds the CA keys: it must be ours alone. Whoever else can write
# it (or its parent) can swap names under this script while it runs, often
# as root: planted links, a swapped work directory. So it is refused unless
# it and its parent belong to the user running this (or root) and nobody
# else may write them; every file already there must be a plain file of
# ours, not a link.
me=$(id -u)
owned_safely() { # path [sticky-ok]: owned by me or root, nobody else may write it, not a link
  [ -d "$1" ] && [ ! -L "$1" ] || return 1
  local uid mode
  uid=$(stat -c %u "$1") mode=$(stat -c %a "$1")
  { [ "$uid" = "$me" ] || [ "$uid" = 0 ]; } || return 1
  # A sticky parent (/tmp) lets others write it but not rename what is ours.
  [ $((8#$mode & 022)) = 0 ] || { [ "${2:-}" = sticky-ok ] && [ $((8#$mode & 01000)) != 0 ]; }
}
umask 077
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
if ! owned_safely "$(dirname "$out")" sticky-ok || ! owned_safely "$out"; then
  echo "certs.sh: $out and its parent must be directories owned by $(id -un) (or root) that no one else can write; refusing to write keys there" >&2
  exit 2
fi
chmod 700 "$out"
for f in "$out"/* "$out"/.[!.]*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -L "$f" ] || { [ ! -f "$f" ] && [ ! -d "$f" ]; } || [ "$(stat -c %u "$f")" != "$me" ]; then
    echo "certs.sh: $f is not a plain file of $(id -un); refusing (move it away and check how it got there)" >&2
    exit 2
  fi
done
days_ca=3650
days_leaf=825
# Everything is made inside a fresh private directory and renamed into
# OUT_DIR: nothing here writes, chmods or reads a serial file through a name
# in OUT_DIR, so a link planted there (by whoever can write OUT_DIR) can
# never make this script, often run as root, touch a file elsewhere. A
# rename replaces a planted link itself, never what it points to.
work=$(mktemp -d "$out/.certs.XXXXXX")
# (OUT_DIR is ours alone, checked above: nobody else can rename this away.)
trap 'rm -rf "$work"' EXIT

# A random 128-bit serial: no .srl file (a fixed name in OUT_DIR) to keep.
serial() { echo "0x$(openssl rand -hex 16)"; }

make_ca() { # name common-name
  local name=$1 cn=$2
  [ -f "$out/$name.crt" ] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/$name.key" -out "$work/$name.crt" -days "$days_ca" -subj "/CN=$cn" \
    -set_serial "$(serial)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 600 "$work/$name.key"
  chmod 644 "$work/$name.crt"
  mv -fT "$work/$name.key" "$out/$name.key"
  mv -fT "$work/$name.crt" "$out/$name.crt"
  echo "created $out/$name.crt"
}

make_leaf() { # file ca cn sans usage
  local file=$1 ca=$2 cn=$3 sans=$4 usage=$5
  if [ -f "$out/$file.crt" ] && [ "$renew" = 0 ]; then return 0; fi
  local alt="" s
  IFS=',' read -r -a list <<<"$sans"
  for s in "${list[@]}"; do
    if [[ $s =~ ^[0-9.]+$ || $s == *:* ]]; then alt+="IP:$s,"; else alt+="DNS:$s,"; fi
  done
  alt=${alt%,}
  local ext=$work/$file.ext
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' \
    "$alt" "$usage" >"$ext"
  # Made in the private directory, then renamed over the old pair, key first.
  local tmp=$work/$file
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp.key" -out "$tmp.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$tmp.csr" -CA "$out/$ca.crt" -CAkey "$out/$ca.key" \
    -set_serial "$(serial)" -out "$tmp.crt" -days "$days_leaf" -extfile "$ext" 2>/dev/null
  rm -f "$ext" "$tmp.csr"
  chmod 600 "$tmp.key"
  chmod 644 "$tmp.crt"
  local verb=created
  [ -f "$out/$file.crt" ] && verb=renewed
  mv -fT "$tmp.key" "$out/$file.key"
  mv -fT "$tmp.crt" "$out/$file.crt"
  echo "$verb $out/$file.crt ($alt, until $(openssl x509 -in "$out/$file.crt" -noout -enddate | cut -d= -f2))"
}

if [ "$renew" = 1 ]; then
  for ca in client-ca route-ca; do
    [ -f "$out/$ca.crt" ] && [ -f "$out/$ca.key" ] || {
      echo "certs.sh: --renew needs the existing $out/$ca.{crt,key}" >&2
      exit 2
    }
  done
fi
make_ca client-ca "Sealbus client CA"
make_ca route-ca "Sealbus route CA"
for spec in "$@"; do
  name=${spec%%=*}
  sans=${spec#*=}
  if [[ -z $name || $name == "$spec" || ! $name =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "certs.sh: bad node spec '$spec' (expected NAME=SAN,SAN...)" >&2
    exit 2
  fi
  make_leaf "$name" client-ca "$name" "$sans" serverAuth
  make_leaf "$name-route" route-ca "$name" "$sans" serverAuth,clientAuth
done
