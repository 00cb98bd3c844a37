#!/usr/bin/env bash
# A local CA and one HTTPS certificate signed by it, for app1.com, app2.com, app3.com and one label
# below each (*.app1.com ...), made with the openssl command alone (OpenSSL 3.0, Debian 12's).
# Usage: scripts/certs.sh [--force] DIR
#
# DIR gets ca.crt and ca.key (ECDSA P-256, 10 years, CN "portier local CA") and server.crt and
# server.key (ECDSA P-256, 825 days: Apple's TLS clients refuse longer). Keys are unencrypted PEM,
# mode 600. The CA carries name constraints: trusted in a browser, it can vouch for these three
# domains and the names below them, never for any other site.
#
# Run again, it changes nothing: server.crt and server.key are kept while the key matches the
# certificate and it is valid for another day, whoever issued it (a certificate of one's own put
# there stays), unless it is this CA's work and no longer verifies against DIR/ca.crt. A missing,
# broken or expiring pair is made anew, by the CA in DIR if its key is there and it has 30 days
# left, else by a new CA. --force makes both anew.
set -euo pipefail

DOMAINS=(app1.com app2.com app3.com)
NAMES=("${DOMAINS[@]}" "${DOMAINS[@]/#/*.}") # each domain and one label below it
CA_CN="portier local CA"
CA_DAYS=3650
SERVER_DAYS=825

usage() {
    echo "usage: $0 [--force] DIR" >&2
    exit 2
}

force=0 dir=""
for arg in "$@"; do
    case $arg in
    --force) force=1 ;;
    -*) usage ;;
    *) [ -z "$dir" ] || usage; dir=$arg ;;
    esac
done
[ -n "$dir" ] || usage
command -v openssl >/dev/null 2>&1 || {
    echo "certs: no openssl command (scripts/deps.sh --build installs it)" >&2
    exit 1
}

say() {
    printf 'certs: %s\n' "$*"
}

# pair_ok CERT KEY [SECONDS]: both readable, the key unencrypted and matching the certificate,
# which is still valid SECONDS from now (default: one day).
pair_ok() {
    local cert=$1 key=$2 secs=${3:-86400} a b
    [ -s "$cert" ] && [ -s "$key" ] || return 1
    a=$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null) || return 1
    b=$(openssl pkey -in "$key" -passin pass: -pubout 2>/dev/null) || return 1
    [ -n "$a" ] && [ "$a" = "$b" ] || return 1
    openssl x509 -in "$cert" -noout -checkend "$secs" >/dev/null 2>&1
}

# ours CERT: issued by a CA this script made (the same name, perhaps an older key).
ours() {
    openssl x509 -in "$1" -noout -issuer -nameopt RFC2253 2>/dev/null |
        grep -qx "issuer=CN=$CA_CN"
}

# chains CERT: verifies against DIR/ca.crt.
chains() {
    [ -s "$dir/ca.crt" ] && openssl verify -CAfile "$dir/ca.crt" "$1" >/dev/null 2>&1
}

until_date() {
    openssl x509 -in "$1" -noout -enddate | sed 's/^notAfter=//'
}

# Decide what to make.
make_ca=$force make_server=$force
if [ "$force" = 0 ]; then
    if ! pair_ok "$dir/server.crt" "$dir/server.key"; then
        make_server=1
    elif ! chains "$dir/server.crt" && ours "$dir/server.crt"; then
        make_server=1 # signed by a CA whose files are gone or were remade
    fi
    if [ "$make_server" = 1 ] && ! pair_ok "$dir/ca.crt" "$dir/ca.key" $((30 * 86400)); then
        make_ca=1
    fi
fi

if [ "$make_server" = 0 ]; then
    until=$(until_date "$dir/server.crt")
    if chains "$dir/server.crt"; then
        say "$dir: the CA and the certificate are there, valid until $until (--force remakes them)"
    else
        issuer=$(openssl x509 -in "$dir/server.crt" -noout -issuer -nameopt RFC2253)
        issuer=${issuer#issuer=}
        say "$dir/server.crt kept: issued by $issuer, not by $dir/ca.crt; valid until $until"
    fi
    exit 0
fi

mkdir -p "$dir"
umask 077
tmp=$(mktemp -d "$dir/.certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

sans=$(printf 'DNS:%s,' "${NAMES[@]}")
sans=${sans%,}
constraints=$(printf 'permitted;DNS:%s,' "${DOMAINS[@]}") # a domain and every name below it
constraints=${constraints%,}
cat >"$tmp/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
nameConstraints = critical, $constraints
[server_ext]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null
}

ca_crt=$dir/ca.crt ca_key=$dir/ca.key
if [ "$make_ca" = 1 ]; then
    newkey "$tmp/ca.key"
    openssl req -new -x509 -config "$tmp/openssl.cnf" -extensions ca_ext -key "$tmp/ca.key" \
        -subj "/CN=$CA_CN" -sha256 -days "$CA_DAYS" -out "$tmp/ca.crt" 2>/dev/null
    ca_crt=$tmp/ca.crt ca_key=$tmp/ca.key
fi

newkey "$tmp/server.key"
openssl req -new -config "$tmp/openssl.cnf" -key "$tmp/server.key" -subj "/CN=${NAMES[0]}" \
    -out "$tmp/server.csr" 2>/dev/null
openssl x509 -req -in "$tmp/server.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$SERVER_DAYS" \
    -extfile "$tmp/openssl.cnf" -extensions server_ext -out "$tmp/server.crt" 2>/dev/null
openssl verify -CAfile "$ca_crt" "$tmp/server.crt" >/dev/null

# Into place: keys readable by their owner only, certificates by everyone.
chmod 600 "$tmp"/*.key
chmod 644 "$tmp"/*.crt
if [ "$make_ca" = 1 ]; then
    mv -f "$tmp/ca.key" "$dir/ca.key"
    mv -f "$tmp/ca.crt" "$dir/ca.crt"
    say "made $dir/ca.crt: the CA \"$CA_CN\", valid until $(until_date "$dir/ca.crt")"
fi
mv -f "$tmp/server.key" "$dir/server.key"
mv -f "$tmp/server.crt" "$dir/server.crt"
say "made $dir/server.crt for ${NAMES[*]}, valid until $(until_date "$dir/server.crt")"
