#!/usr/bin/env bash
# A throwaway PostgreSQL cluster that accepts TLS connections only, with a server certificate for
# `localhost` signed by a CA made here. The TLS tests (tests/api/pg_tls.rs) start one each, and
# .ci/run runs the whole PostgreSQL half of the suite against one.
#
#   scripts/pg-tls-cluster.sh start DIR PORT   # prints the verify-full URL on stdout
#   scripts/pg-tls-cluster.sh stop DIR
#
# DIR/tls holds ca.pem (the CA that signed the server's certificate) and other-ca.pem (a CA that
# signed nothing). Uses the machine's initdb and pg_ctl; as root, they run as the postgres user.
set -euo pipefail

cmd=${1:?usage: pg-tls-cluster.sh start DIR PORT | stop DIR}
dir=${2:?usage: pg-tls-cluster.sh start DIR PORT | stop DIR}

bindir=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -x "$bindir/initdb" ] || { echo "pg-tls-cluster: initdb not found" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
start)
    port=${3:?usage: pg-tls-cluster.sh start DIR PORT}
    rm -rf "$dir"
    mkdir -p "$dir/tls"
    chmod 0755 "$dir"
    tls=$dir/tls
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    {
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=logout-ledger test CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
            -keyout "$tls/ca.key" -out "$tls/ca.pem"
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=some other CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
            -keyout "$tls/other-ca.key" -out "$tls/other-ca.pem"
        openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr"
        printf '%s\n' "subjectAltName=DNS:localhost" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext"
        openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
            -CAcreateserial -days 2 -extfile "$tls/server.ext" -out "$tls/server.pem"
    } >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; exit 1; }
    chmod 0600 "$tls"/*.key
    chmod 0644 "$tls"/*.pem
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = 'localhost'
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$tls/server.pem'
ssl_key_file = '$tls/server.key'
fsync = off
max_connections = 200
EOF
    # TLS or nothing: a clear-text connection over TCP is refused by the server itself.
    cat >"$dir/data/pg_hba.conf" <<EOF
local     all all               trust
hostssl   all all 127.0.0.1/32  trust
hostssl   all all ::1/128       trust
hostnossl all all 0.0.0.0/0     reject
hostnossl all all ::/0          reject
EOF
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null ||
        { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@localhost:$port/postgres?sslmode=verify-full&sslrootcert=$tls/ca.pem"
    ;;
stop)
    [ -d "$dir/data" ] && as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: pg-tls-cluster.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
