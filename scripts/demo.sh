#!/usr/bin/env bash
# Gatehouse demo: a JWKS served on loopback, the server on a demo config, and a
# few decisions shown with gatehousectl. With --serve the server keeps running
# afterwards (Ctrl-C stops it); without, everything stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:9191}
HTTP_ADDR=${HTTP_ADDR:-127.0.0.1:8181}
ADMIN_ADDR=${ADMIN_ADDR:-127.0.0.1:9192}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "generating an ES256 key and its JWKS"
"$BIN/gatehousectl" jwks generate --alg ES256 --kid demo-1 --out-private "$work/key.json" --out-jwks "$work/jwks.json"
"$BIN/gatehousectl" jwks serve --jwks "$work/jwks.json" --addr 127.0.0.1:0 --port-file "$work/jwks.addr" >/dev/null &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/jwks.addr" ] && break; sleep 0.1; done
jwks_url="http://$(cat "$work/jwks.addr")/.well-known/jwks.json"
echo "JWKS served at $jwks_url"

cat > "$work/gatehouse.yaml" <<YAML
listen:
  grpc: "$GRPC_ADDR"
  http: "$HTTP_ADDR"
  admin: "$ADMIN_ADDR"
jwt:
  providers:
    - name: demo
      issuer: https://issuer.demo.local
      audiences: [orders-api]
      jwks_uri: $jwks_url
      claim_to_headers: [{claim: sub, header: x-jwt-sub}]
bypass:
  trusted_cidrs: [10.0.0.0/8]
headers:
  deny: [{name: user-agent, regex: "(?i)sqlmap|nikto"}]
authorization:
  rules:
    - {name: public, methods: [GET], paths: [/healthz]}
    - {name: read-orders, methods: [GET], paths: [/orders, "/orders/*"], request_principals: ["*"]}
    - {name: write-orders, methods: [POST], paths: [/orders], claims: [{path: [scope], values: ["orders:write"]}]}
YAML
say "starting gatehouse (config below)"
cat "$work/gatehouse.yaml"
"$BIN/gatehouse" --config "$work/gatehouse.yaml" 2>"$work/gatehouse.log" &
gh=$!
pids+=($gh)
for _ in $(seq 100); do
  curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 "$gh" 2>/dev/null || { cat "$work/gatehouse.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://$HTTP_ADDR/readyz"; echo

token=$("$BIN/gatehousectl" token --key "$work/key.json" --iss https://issuer.demo.local --aud orders-api --sub alice --ttl 10m)
expired=$("$BIN/gatehousectl" token --key "$work/key.json" --iss https://issuer.demo.local --aud orders-api --sub alice --expired)

show() {
  say "$1"
  shift
  echo "\$ gatehousectl check $*"
  "$BIN/gatehousectl" check --addr "$GRPC_ADDR" "$@" || true
}
show "no token: 401" --path /orders
show "valid token: 200 and identity headers" --path /orders --token "$token"
show "expired token: 401 with the reason" --path /orders --token "$expired"
show "trusted network, no token: allowed by the bypass" --path /orders --source-ip 10.1.2.3
show "forged X-Forwarded-For from an untrusted peer: still 401" --path /orders --source-ip 198.51.100.7 -H "x-forwarded-for: 10.1.2.3"
show "scanner user agent, even from the trusted network: 403" --path /orders --source-ip 10.1.2.3 -H "user-agent: sqlmap/1.7"
show "public route, no token: allowed by the rule 'public'" --path /healthz
show "a write without the orders:write scope: 403 no_matching_rule" --method POST --path /orders --token "$token"

say "decision log (one JSON line per decision)"
grep '"msg":"decision"' "$work/gatehouse.log" | tail -n 3

say "why was it denied? gatehousectl explain asks the admin API (no log line, no metrics)"
echo "\$ gatehousectl explain --path /orders --source-ip 198.51.100.7 -H 'x-forwarded-for: 10.1.2.3' --token <expired>"
"$BIN/gatehousectl" explain --addr "$ADMIN_ADDR" --path /orders --source-ip 198.51.100.7 -H "x-forwarded-for: 10.1.2.3" --token "$expired" || true

say "metrics (a few of /metrics)"
curl -fsS "http://$HTTP_ADDR/metrics" | grep '^gatehouse_decisions_total' | grep -v ' 0$' || true

if [ "${1:-}" = "--serve" ]; then
  say "gatehouse is serving ext_authz on $GRPC_ADDR (ops and /metrics on http://$HTTP_ADDR, admin on $ADMIN_ADDR); Ctrl-C stops it"
  echo "try: $BIN/gatehousectl check --addr $GRPC_ADDR --path /orders --token \$($BIN/gatehousectl token --key $work/key.json --iss https://issuer.demo.local --aud orders-api --sub you)"
  wait "$gh"
fi
