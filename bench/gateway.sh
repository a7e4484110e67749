#!/usr/bin/env bash
# Gateway benchmark (not a timed test): stackctl's gateway against a direct
# connection and against nginx `proxy_pass` with upstream keep-alive.
#
#   bash bench/gateway.sh            # ROUNDS=5 DURATION=5 CONNS=64 by default
#   ROUNDS=3 STACKCTL=target/profiling/stackctl bash bench/gateway.sh
#
# Setup: a tiny static backend (nginx, `return 200`), wrk as the load; the
# proxy under test is pinned to the first half of the CPUs, wrk and the
# backend to the rest; nginx's `worker_processes` and stackctl's tokio
# worker threads (`STACKCTL_WORKERS`) are both set to the number of proxy
# CPUs, so neither runs more threads than it has cores. Runs are interleaved
# (direct, nginx, stackctl, direct, …) and medians are printed, with
# R = proxied req/s ÷ direct req/s; each round runs GETs and then POSTs of
# a 1 KiB JSON body (a chat completion's request). Also: idle RSS of `stackctl up` and of
# nginx, RSS growth of stackctl through a 200 MB upload and download, and an
# SSE run (one event every 20 ms) showing per-event delay and whether any
# events were coalesced into one read, and the RSS each of 3000 idle
# kept-alive client connections costs (IDLE_N).
#
# Needs root or sudo for apt-get if wrk/nginx are missing (Debian packages).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/stackctl-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
    echo "installing wrk and nginx (Debian packages)…" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null 2>&1 \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# STACKCTL=path/to/stackctl benchmarks that binary (e.g. a `profiling`
# build) instead of building the release one.
if [ -z "${STACKCTL:-}" ]; then
    (cd "$here" && cargo build --release --quiet)
    STACKCTL="$here/target/release/stackctl"
fi

ncpu=$(nproc)
half=$(( ncpu / 2 )); [ "$half" -ge 1 ] || half=1
if [ "$ncpu" -ge 2 ]; then
    PROXY_CPUS="0-$((half - 1))"; LOAD_CPUS="$half-$((ncpu - 1))"
else
    PROXY_CPUS=0; LOAD_CPUS=0
fi
WORKERS=$half
# Background processes are started with `taskset … &` directly (never via
# a shell function), so that $! is the process itself and cleanup kills it.
pin_load() { taskset -c "$LOAD_CPUS" "$@"; }

BACKEND=18181; NGINX_PROXY=18182; GATEWAY=18180; SSE_BACKEND=18183; WS_BACKEND=18184

# ---- backend: nginx returning a tiny body, plus a 200 MB file ----------------
head -c $((200 * 1024 * 1024)) /dev/zero > "$work/big.bin"
chmod 644 "$work/big.bin"; chmod 755 "$work"
mkdir -p "$work/backend" "$work/proxy"
cat > "$work/backend/nginx.conf" <<EOF
worker_processes $half;
worker_rlimit_nofile 16384;
daemon off;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/backend/body;
    server {
        listen 127.0.0.1:$BACKEND;
        client_max_body_size 0;
        location = /big.bin { root $work; }
        location = /upload { return 200 "ok\n"; }
        location / { return 200 "ok\n"; }
    }
}
EOF
taskset -c "$LOAD_CPUS" "$NGINX" -p "$work/backend" -c "$work/backend/nginx.conf" 2>/dev/null &
pids+=($!)

# ---- nginx as the proxy under comparison ----------------------------------------
cat > "$work/proxy/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile 16384;
daemon off;
pid $work/proxy/nginx.pid;
error_log $work/proxy/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/proxy/body;
    proxy_temp_path $work/proxy/tmp;
    upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
    upstream sse { server 127.0.0.1:$SSE_BACKEND; keepalive 16; }
    upstream ws { server 127.0.0.1:$WS_BACKEND; }
    server {
        listen 127.0.0.1:$NGINX_PROXY;
        client_max_body_size 0;
        location /ws {
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
        }
        location /sse {
            proxy_pass http://sse;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
taskset -c "$PROXY_CPUS" "$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf" 2>/dev/null &
pids+=($!)

# ---- stackctl up with only a gateway ------------------------------------------------
cat > "$work/stack.yaml" <<EOF
version: 1
name: bench
gateway:
  listen: 127.0.0.1:$GATEWAY
  default_backend: http://127.0.0.1:$BACKEND
  routes:
    - { id: sse, prefix: /sse, backend: "http://127.0.0.1:$SSE_BACKEND" }
    - { id: ws, prefix: /ws, backend: "http://127.0.0.1:$WS_BACKEND" }
  admin:
    password: bench-password-123
    password_file: $work/admin-password
  state_file: $work/state/gateway.json
EOF
RUST_LOG=warn STACKCTL_WORKERS=$WORKERS taskset -c "$PROXY_CPUS" "$STACKCTL" -f "$work/stack.yaml" up >"$work/stackctl.log" 2>&1 &
STACKCTL_PID=$!
pids+=($STACKCTL_PID)

# ---- SSE and WebSocket backends and clients (python3, standard library only) --------
cat > "$work/peers.py" <<'EOF'
import asyncio, base64, hashlib, os, re, socket, struct, sys, time

# ---- SSE: the backend sends N events, one every 20 ms, each stamped with
# its send time; the client measures each event's delay and whether any
# two arrived in one read (coalesced).
async def sse_handle(reader, writer, n):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    for _ in range(n):
        ev = b"data: %d\n\n" % time.time_ns()
        writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        await writer.drain()
        await asyncio.sleep(0.02)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    writer.close()

def sse_client(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"GET /sse HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    delays, coalesced, seen, buf = [], 0, 0, b""
    while seen < n:
        chunk = s.recv(65536)
        now = time.time_ns()
        if not chunk:
            break
        buf += chunk
        events = re.findall(rb"data: (\d+)\n\n", buf)
        buf = buf[buf.rfind(b"\n\n") + 2:] if events else buf
        if len(events) > 1:
            coalesced += len(events) - 1
        for e in events:
            delays.append((now - int(e)) / 1000.0)
        seen += len(events)
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]
    print(f"{len(delays)} {p(0.5):.0f} {p(0.99):.0f} {coalesced}")

# ---- WebSocket: an RFC 6455 echo backend; the client sends N small text
# messages one at a time and measures each round trip.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

async def ws_handle(reader, writer, n):
    head = await reader.readuntil(b"\r\n\r\n")
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    await writer.drain()
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
            if b0 & 0x0F == 8:
                break
            writer.write(bytes([b0, n]) + data)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    writer.close()

def ws_client(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:40]
    payload = b"x" * 32
    mask = b"\1\2\3\4"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    rtts = []
    for _ in range(n):
        t = time.perf_counter_ns()
        s.sendall(frame)
        got = b""
        while len(got) < 2 + len(payload):
            got += s.recv(4096)
        rtts.append((time.perf_counter_ns() - t) / 1000.0)
    rtts.sort()
    p = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))]
    print(f"{len(rtts)} {p(0.5):.0f} {p(0.99):.0f}")

# ---- idle: N kept-alive client connections, each after one request (a GET,
# or with "chunked" a POST with a chunked body, which stackctl serves with
# hyper); prints "ready" once all are open and idle, then holds them until
# killed (5 minutes at most).
def idle_client(port, n, kind="get"):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    req = (b"POST / HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
           if kind == "chunked" else b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        head, _, body = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        while m and len(body) < int(m.group(1)):
            body += s.recv(4096)
        socks.append(s)
    print("ready", flush=True)
    time.sleep(300)  # killed long before; bounded all the same

# usage: peers.py sse|ws serve|client PORT N; peers.py idle client PORT N [get|chunked]
KINDS = {"sse": (sse_handle, sse_client), "ws": (ws_handle, ws_client), "idle": (None, idle_client)}
handle, client = KINDS[sys.argv[1]]
port, n = int(sys.argv[3]), int(sys.argv[4])
if sys.argv[1] == "idle":
    client(port, n, *sys.argv[5:])
    sys.exit(0)
if sys.argv[2] == "serve":
    async def main():
        srv = await asyncio.start_server(lambda r, w: handle(r, w, n), "127.0.0.1", port)
        async with srv:
            await srv.serve_forever()
    asyncio.run(main())
else:
    client(port, n)
EOF
taskset -c "$LOAD_CPUS" python3 "$work/peers.py" sse serve "$SSE_BACKEND" 200 &
pids+=($!)
taskset -c "$LOAD_CPUS" python3 "$work/peers.py" ws serve "$WS_BACKEND" 0 &
pids+=($!)

wait_port() {
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "port $1 did not come up" >&2; cat "$work/stackctl.log" >&2; exit 1
}
wait_port $BACKEND; wait_port $NGINX_PROXY; wait_port $GATEWAY
sleep 1

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
nginx_rss_kb() {
    local master; master=$(cat "$work/proxy/nginx.pid")
    local total; total=$(rss_kb "$master")
    for c in $(pgrep -P "$master"); do total=$((total + $(rss_kb "$c"))); done
    echo "$total"
}
IDLE_STACKCTL=$(rss_kb $STACKCTL_PID)
IDLE_NGINX=$(nginx_rss_kb)

# ---- throughput and latency, interleaved -----------------------------------------------
# POSTs carry a chat completion's request: about 1 KiB of JSON.
cat > "$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local msgs = {}
for i = 1, 12 do
    msgs[#msgs + 1] = string.format('{"role":"%s","content":"message number %d of a conversation, long enough to matter"}',
        i % 2 == 1 and "user" or "assistant", i)
end
wrk.body = '{"model":"gpt-4o-mini","stream":false,"temperature":0.7,"messages":[' .. table.concat(msgs, ",") .. ']}'
EOF
run_wrk() { # port [wrk options…] -> "req/s p50_us p99_us"
    local port=$1; shift
    pin_load wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$@" "http://127.0.0.1:$port/" 2>/dev/null | awk '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        END { printf "%.0f %.0f %.0f\n", rps, p50, p99 }'
}
declare -A results
for name in direct nginx stackctl; do results[$name]=""; results[post:$name]=""; done
for r in $(seq 1 "$ROUNDS"); do
    for name in direct nginx stackctl; do
        case $name in direct) port=$BACKEND ;; nginx) port=$NGINX_PROXY ;; stackctl) port=$GATEWAY ;; esac
        results[$name]+="$(run_wrk $port)"$'\n'
        results[post:$name]+="$(run_wrk $port -s "$work/post.lua")"$'\n'
    done
    echo "round $r/$ROUNDS done" >&2
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }

echo
echo "== HTTP/1.1 keep-alive, wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, medians"
echo "   (proxy on CPUs $PROXY_CPUS with $WORKERS worker(s); wrk and backend on CPUs $LOAD_CPUS)"
table() { # prefix ("" or "post:")
    local direct; direct=$(col "${1}direct" 1)
    printf '%-10s %12s %8s %10s %10s\n' path "req/s" R "p50 (us)" "p99 (us)"
    for name in direct nginx stackctl; do
        rps=$(col "$1$name" 1)
        printf '%-10s %12.0f %8.3f %10.0f %10.0f\n' "$name" "$rps" "$(awk -v a="$rps" -v b="$direct" 'BEGIN { printf "%.3f", a / b }')" "$(col "$1$name" 2)" "$(col "$1$name" 3)"
    done
}
table ""
echo
echo "== POST of a 1 KiB JSON body (a chat completion's request), same rounds, medians"
table "post:"

echo
echo "== idle RSS"
echo "stackctl up (gateway only): $((IDLE_STACKCTL / 1024)) MiB ($IDLE_STACKCTL KiB)"
echo "nginx proxy (master + $WORKERS worker(s)): $((IDLE_NGINX / 1024)) MiB ($IDLE_NGINX KiB)"

# ---- 200 MB through the gateway ---------------------------------------------------------
before=$(rss_kb $STACKCTL_PID)
# Reset the peak (VmHWM) so that it shows this transfer alone: the peak
# since start is the Argon2 hashing of the admin password (19 MiB of
# memory cost), not anything the proxy holds.
if echo 5 > "/proc/$STACKCTL_PID/clear_refs" 2>/dev/null; then peak_from="the transfer alone"; else peak_from="since start (could not reset it)"; fi
curl -s -o /dev/null -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$work/big.bin" "http://127.0.0.1:$GATEWAY/upload"
after_up=$(hwm_kb $STACKCTL_PID)
curl -s -o /dev/null "http://127.0.0.1:$GATEWAY/big.bin"
after_down=$(hwm_kb $STACKCTL_PID)
TRANSFER_GROWTH=$(( after_down - before ))
echo
echo "== 200 MB through stackctl: RSS before $((before / 1024)) MiB, peak after upload $((after_up / 1024)) MiB, peak after download $((after_down / 1024)) MiB"
echo "   (peak of $peak_from; growth = peak - before = $((TRANSFER_GROWTH / 1024)) MiB, $TRANSFER_GROWTH KiB)"

# ---- SSE --------------------------------------------------------------------------------
echo
echo "== SSE: 200 events, one every 20 ms; delay from the backend's send to the client's read"
printf '%-10s %8s %12s %12s %10s\n' path events "p50 (us)" "p99 (us)" coalesced
SSE_COALESCED=0
for name in direct nginx stackctl; do
    case $name in direct) port=$SSE_BACKEND ;; nginx) port=$NGINX_PROXY ;; stackctl) port=$GATEWAY ;; esac
    read -r n p50 p99 co < <(pin_load python3 "$work/peers.py" sse client "$port" 200)
    printf '%-10s %8s %12s %12s %10s\n' "$name" "$n" "$p50" "$p99" "$co"
    if [ "$name" = stackctl ]; then SSE_COALESCED=$co; fi
done

# ---- WebSocket ----------------------------------------------------------------------------
echo
echo "== WebSocket: 2000 echoes of a 32-byte text message, one at a time; round-trip time"
printf '%-10s %8s %12s %12s\n' path messages "p50 (us)" "p99 (us)"
declare -A WS_P99
for name in direct nginx stackctl; do
    case $name in direct) port=$WS_BACKEND ;; nginx) port=$NGINX_PROXY ;; stackctl) port=$GATEWAY ;; esac
    read -r n p50 p99 < <(pin_load python3 "$work/peers.py" ws client "$port" 2000)
    printf '%-10s %8s %12s %12s\n' "$name" "$n" "$p50" "$p99"
    WS_P99[$name]=$p99
done

# ---- idle keep-alive connections -----------------------------------------------------------
# RSS growth while IDLE_N more connections sit idle after one request each.
# Each set stays open until all are measured, so no set reuses memory that
# an earlier one freed.
IDLE_N=${IDLE_N:-3000}
idle_pids=()
# Not called in $(…): the clients' pids must reach this shell, which kills
# them once all sets are measured (and at exit).
idle_bytes() { # proxy-pid-or-"nginx" port get|chunked -> IDLE_BYTES: RSS per idle connection
    local rss before after out
    if [ "$1" = nginx ]; then rss=nginx_rss_kb; else rss="rss_kb $1"; fi
    before=$($rss)
    out="$work/idle.$3.$2"
    taskset -c "$LOAD_CPUS" python3 "$work/peers.py" idle client "$2" "$IDLE_N" "$3" >"$out" 2>&1 &
    idle_pids+=($!); pids+=($!)
    for _ in $(seq 1 600); do grep -q ready "$out" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    after=$($rss)
    IDLE_BYTES=$(( (after - before) * 1024 / IDLE_N ))
}
echo
echo "== $IDLE_N idle keep-alive client connections (each after one request): RSS growth per connection"
idle_bytes $STACKCTL_PID $GATEWAY get; IDLE_S=$IDLE_BYTES
idle_bytes $STACKCTL_PID $GATEWAY chunked; IDLE_S_HYPER=$IDLE_BYTES
idle_bytes nginx $NGINX_PROXY get; IDLE_NG=$IDLE_BYTES
kill "${idle_pids[@]}" 2>/dev/null || true
printf '%-40s %10s\n' path "bytes/conn"
printf '%-40s %10s\n' "stackctl (GET: own front end)" "$IDLE_S"
printf '%-40s %10s\n' "stackctl (chunked POST: hyper's side)" "$IDLE_S_HYPER"
printf '%-40s %10s\n' "nginx (GET)" "$IDLE_NG"

# ---- the gateway issue's targets ---------------------------------------------------------
verdict() { if [ "$1" = 1 ]; then echo met; else echo "NOT met"; fi; }
R_RATIO=$(awk -v s="$(col stackctl 1)" -v n="$(col nginx 1)" 'BEGIN { printf "%.3f", s / n }')
ADDED_S=$(( $(col stackctl 3) - $(col direct 3) ))
ADDED_N=$(( $(col nginx 3) - $(col direct 3) ))
echo
echo "== targets"
echo "R(stackctl) >= R(nginx): R(stackctl)/R(nginx) = $R_RATIO: $(verdict "$(awk -v r="$R_RATIO" 'BEGIN { print (r >= 1) }')")"
echo "added p99 <= nginx's: stackctl +${ADDED_S} us, nginx +${ADDED_N} us: $(verdict "$(( ADDED_S <= ADDED_N ))")"
R_POST=$(awk -v s="$(col post:stackctl 1)" -v n="$(col post:nginx 1)" 'BEGIN { printf "%.3f", s / n }')
echo "POST 1 KiB JSON: R(stackctl) >= R(nginx): R(stackctl)/R(nginx) = $R_POST: $(verdict "$(awk -v r="$R_POST" 'BEGIN { print (r >= 1) }')")"
echo "idle RSS of stackctl up <= 20 MB: $((IDLE_STACKCTL / 1024)) MiB: $(verdict "$(( IDLE_STACKCTL * 1024 <= 20000000 ))")"
echo "SSE events never coalesced: $SSE_COALESCED coalesced: $(verdict "$(( SSE_COALESCED == 0 ))")"
echo "WebSocket echo p99 <= nginx's + 0.2 ms: stackctl ${WS_P99[stackctl]} us, nginx ${WS_P99[nginx]} us: $(verdict "$(( WS_P99[stackctl] <= WS_P99[nginx] + 200 ))")"
echo "idle keep-alive connection <= 4 KiB: stackctl $IDLE_S bytes: $(verdict "$(( IDLE_S <= 4096 ))")"
echo "200 MB up and down grow RSS by <= 8 MB: $((TRANSFER_GROWTH / 1024)) MiB: $(verdict "$(( TRANSFER_GROWTH * 1024 <= 8000000 ))")"
