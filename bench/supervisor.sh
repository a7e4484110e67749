#!/usr/bin/env bash
# Supervisor benchmark: stackctl vs supervisord vs tini, each as PID 1 in a
# fresh PID namespace (unshare --pid --fork --mount-proc), running the same
# three programs, one of which double-forks an orphan.
#
# Measures per round, prints medians side by side:
#   rss      VmRSS of PID 1 once everything runs
#   private  RssAnon of PID 1 (VmRSS without the binary's shared code pages)
#   start    exec of the namespace -> all three programs running
#   stop     SIGTERM to PID 1 -> PID 1 exited
#   exit     PID 1's exit code
#   zombies  zombie processes in the namespace after the orphan ended
#
# Usage: bench/supervisor.sh [ROUNDS]     (root; Linux; default 7 rounds)
# Env:   STACKCTL_BIN=path to use a prebuilt binary instead of building.
# Not a test: numbers vary with the machine. Installs supervisor and tini
# from apt when missing.
set -euo pipefail

rounds=${1:-7}
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "bench/supervisor.sh: needs root (for unshare --pid)" >&2
  exit 2
fi
missing=()
command -v supervisord >/dev/null || missing+=(supervisor)
command -v tini >/dev/null || missing+=(tini)
command -v unshare >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bin=${STACKCTL_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --quiet)
  bin="$root/target/release/stackctl"
fi

work=$(mktemp -d /tmp/stackctl-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Not `exec python3`: the EXIT trap must outlive it to remove $work.
python3 - "$bin" "$work" "$rounds" <<'PY'
import os, shutil, signal, statistics, subprocess, sys, time

stackctl, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
supervisord = shutil.which("supervisord")
tini = shutil.which("tini")

# The three programs: each marks itself running, then sleeps. The third
# double-forks: the subshell's background sleep is orphaned to PID 1 and
# ends after 0.2 s, so PID 1 must reap it.
def programs(d):
    return [
        f"touch {d}/r1; exec sleep 1000",
        f"touch {d}/r2; exec sleep 1000",
        f"(sleep 0.2 &); touch {d}/r3; exec sleep 1000",
    ]

def setup(kind, d):
    os.makedirs(d)
    progs = programs(d)
    if kind == "stackctl":
        with open(f"{d}/stack.yaml", "w") as f:
            f.write("version: 1\nname: bench\nservices:\n")
            for i, p in enumerate(progs, 1):
                f.write(f"  p{i}:\n    command: [\"sh\", \"-c\", \"{p}\"]\n    stop_timeout: 5s\n")
        return [stackctl, "-f", f"{d}/stack.yaml", "up"]
    if kind == "supervisord":
        with open(f"{d}/supervisord.conf", "w") as f:
            f.write(f"[supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n"
                    f"pidfile={d}/supervisord.pid\n\n")
            for i, p in enumerate(progs, 1):
                f.write(f"[program:p{i}]\ncommand=sh -c \"{p}\"\nstopasgroup=true\nkillasgroup=true\n"
                        f"stopwaitsecs=5\nautorestart=true\n\n")
        return [supervisord, "-c", f"{d}/supervisord.conf"]
    if kind == "tini":
        # tini runs one child; a shell starts the three. -g: signals go to
        # the child's whole process group, the fair comparison.
        script = " & ".join(f"sh -c '{p}'" for p in progs) + " & wait"
        return [tini, "-g", "--", "sh", "-c", script]
    raise ValueError(kind)

def children(pid):
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                st = f.read()
        except OSError:
            continue
        rest = st.rsplit(")", 1)[1].split()
        if int(rest[1]) == pid:
            out.append((int(e), rest[0]))
    return out

def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c, state in children(todo.pop()):
            out.append((c, state))
            todo.append(c)
    return out

def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def wait_until(pred, timeout, step=0.0005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None

def one_round(kind, n):
    d = f"{work}/{kind}-{n}"
    argv = setup(kind, d)
    t0 = time.monotonic()
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc"] + argv,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ok = wait_until(lambda: all(os.path.exists(f"{d}/r{i}") for i in (1, 2, 3)), 30)
        start = time.monotonic() - t0 if ok else float("nan")
        init = wait_until(lambda: (children(p.pid) or [(None,)])[0][0], 5)
        # Let the orphan end (0.2 s) and PID 1 settle before measuring.
        time.sleep(1.0)
        rss = rss_kb(init) / 1024
        # Private memory only: VmRSS also counts the binary's code pages the
        # kernel mapped (shared, clean, reclaimable; grows with binary size).
        anon = rss_kb(init, "RssAnon") / 1024
        zombies = sum(1 for _, s in descendants(init) if s == "Z")
        t1 = time.monotonic()
        os.kill(init, signal.SIGTERM)
        code = p.wait(timeout=30)
        stop = time.monotonic() - t1
        # unshare re-raises a signal death on itself: show it as 128+n.
        code = 128 - code if code < 0 else code
        return dict(rss=rss, anon=anon, start=start, stop=stop, exit=code, zombies=zombies)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

kinds = ["stackctl", "supervisord", "tini"]
results = {k: [] for k in kinds}
for n in range(rounds):
    for k in kinds:  # interleaved, so drift hits all three alike
        results[k].append(one_round(k, n))

def med(k, key):
    return statistics.median(r[key] for r in results[k])

def spread(k, key):
    v = [r[key] for r in results[k]]
    return min(v), max(v)

print(f"supervisor benchmark: {rounds} rounds, medians (min-max); PID 1 in a fresh PID namespace")
print(f"stackctl: {stackctl} ({os.path.getsize(stackctl) // 1024} KiB)")
print(f"{'':14}" + "".join(f"{k:>24}" for k in kinds))
rows = [
    ("PID-1 RSS", "rss", lambda v: f"{v:.1f} MB"),
    ("  of it private", "anon", lambda v: f"{v:.1f} MB"),
    ("exec->running", "start", lambda v: f"{v * 1000:.0f} ms"),
    ("SIGTERM->exit", "stop", lambda v: f"{v * 1000:.0f} ms"),
]
for label, key, fmt in rows:
    cells = []
    for k in kinds:
        lo, hi = spread(k, key)
        cells.append(f"{fmt(med(k, key))} ({fmt(lo).split()[0]}-{fmt(hi)})")
    print(f"{label:14}" + "".join(f"{c:>24}" for c in cells))
print(f"{'exit code':14}" + "".join(f"{'/'.join(sorted({str(r['exit']) for r in results[k]})):>24}" for k in kinds))
print(f"{'zombies left':14}" + "".join(f"{max(r['zombies'] for r in results[k]):>24}" for k in kinds))
PY
