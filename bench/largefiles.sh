#!/usr/bin/env bash
# Large-file benchmark: stackctl's LFS offload vs the git-lfs CLI, both
# against the same real LFS server (giftless on 127.0.0.1) and local bare
# repositories, in one run.
#
# Per round, for each tool:
#   backup   a data dir holding one SIZE MiB file + 100 small files:
#            snapshot/commit + upload + push
#   restore  wiped data -> bytes back in place (stackctl: `restore`;
#            git-lfs: `git clone` + `git lfs pull` + copy)
#   rss      peak resident memory of the tool's processes (flat in the
#            file size means streamed)
# Prints medians side by side and git-lfs/stackctl ratios (> 1: stackctl faster).
#
# Usage: bench/largefiles.sh [ROUNDS] [SIZE_MIB]     (default 3 rounds, 256 MiB)
# Env:   STACKCTL_BIN=path to use a prebuilt binary; GIFTLESS_VENV (default
#        target/giftless-venv, as .ci/run makes it).
# Not a test: numbers vary with the machine. Installs git-lfs when missing.
set -euo pipefail

rounds=${1:-3}
size=${2:-256}
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${GIFTLESS_VENV:-$root/target/giftless-venv}

if ! command -v git-lfs >/dev/null; then
  echo "installing: git-lfs" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git-lfs >/dev/null
fi
if [ ! -x "$venv/bin/flask" ]; then
  echo "installing giftless into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$root/tests/giftless-requirements.txt"
fi

bin=${STACKCTL_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --quiet)
  bin="$root/target/release/stackctl"
fi

work=$(mktemp -d /tmp/stackctl-bench-lfs.XXXXXX)
trap 'rm -rf "$work"' EXIT

exec python3 - "$bin" "$work" "$rounds" "$size" "$venv" <<'PY'
import os, resource, shutil, socket, statistics, subprocess, sys, time

stackctl, work, rounds, size_mib, venv = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def start_giftless():
    d = os.path.join(work, "giftless")
    os.makedirs(os.path.join(d, "objects"), exist_ok=True)
    cfg = os.path.join(d, "giftless.yaml")
    with open(cfg, "w") as f:
        f.write('AUTH_PROVIDERS: ["giftless.auth.allow_anon:read_write"]\n'
                "TRANSFER_ADAPTERS:\n  basic:\n    factory: giftless.transfer.basic_streaming:factory\n"
                "    options:\n      storage_class: giftless.storage.local_storage:LocalStorage\n"
                f"      storage_options: {{ path: {d}/objects }}\n")
    port = free_port()
    p = subprocess.Popen([os.path.join(venv, "bin/flask"), "--app", "giftless.wsgi_entrypoint", "run",
                          "-h", "127.0.0.1", "-p", str(port)],
                         env=dict(os.environ, GIFTLESS_CONFIG_FILE=cfg),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("giftless did not start")

def run(*args, cwd=None, env=None):
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def measured(fn):
    # Peak RSS of the children run inside fn: RUSAGE_CHILDREN's maxrss is the
    # largest of all waited-for children so far, so each measurement runs in
    # a fresh helper process.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        os.write(w, f"{dt} {rss}".encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 100).decode()
    os.waitpid(pid, 0)
    dt, rss = out.split()
    return float(dt), int(rss) / 1024

def make_data(d):
    os.makedirs(d)
    with open(os.path.join(d, "model.bin"), "wb") as f:
        chunk = os.urandom(1 << 20)
        for i in range(size_mib):
            f.write(chunk[:-8] + i.to_bytes(8, "little"))
    for i in range(100):
        with open(os.path.join(d, f"small{i}.json"), "w") as f:
            f.write('{"n": %d}' % i)

def bare(path):
    run("git", "init", "-q", "--bare", "-b", "main", path)

def stackctl_round(base, lfs_url):
    data = os.path.join(base, "data")
    make_data(data)
    bare(os.path.join(base, "remote.git"))
    with open(os.path.join(base, "stack.yaml"), "w") as f:
        f.write("name: bench\npersist:\n  remote: ./remote.git\n  workdir: ./work\n  paths: [./data]\n"
                f"  large_files: {{ threshold: 10MiB, store: lfs, url: \"{lfs_url}\" }}\n")
    sc = lambda *a: run(stackctl, "-f", os.path.join(base, "stack.yaml"), *a, cwd=base)
    sc("restore")
    r = {}
    r["backup"], r["backup_rss"] = measured(lambda: sc("backup"))
    shutil.rmtree(data)
    shutil.rmtree(os.path.join(base, "work"))
    r["restore"], r["restore_rss"] = measured(lambda: sc("restore", "--force"))
    return r

def gitlfs_round(base, lfs_url):
    data = os.path.join(base, "data")
    make_data(data)
    remote = os.path.join(base, "remote.git")
    bare(remote)
    repo = os.path.join(base, "repo")
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    def backup():
        run("git", "init", "-q", "-b", "main", repo)
        run("git", "-C", repo, "lfs", "install", "--local")
        run("git", "-C", repo, "config", "-f", ".lfsconfig", "lfs.url", lfs_url)
        run("git", "-C", repo, "lfs", "track", "*.bin")
        run("rsync", "-a", data + "/", os.path.join(repo, "data") + "/")
        run("git", "-C", repo, "add", "-A")
        run("git", *ident, "-C", repo, "commit", "-q", "-m", "backup")
        run("git", "-C", repo, "push", "-q", "file://" + remote, "main")
    r = {}
    r["backup"], r["backup_rss"] = measured(backup)
    shutil.rmtree(data)
    shutil.rmtree(repo)
    def restore():
        env = dict(os.environ, GIT_LFS_SKIP_SMUDGE="1")
        run("git", "clone", "-q", "file://" + remote, repo, env=env)
        run("git", "-C", repo, "lfs", "install", "--local")
        run("git", "-C", repo, "lfs", "pull")
        run("rsync", "-a", os.path.join(repo, "data") + "/", data + "/")
    r["restore"], r["restore_rss"] = measured(restore)
    return r

giftless, port = start_giftless()
try:
    results = {"stackctl": [], "git-lfs": []}
    for i in range(rounds):
        for name, fn in (("stackctl", stackctl_round), ("git-lfs", gitlfs_round)):
            base = os.path.join(work, f"{name}-{i}")
            os.makedirs(base)
            url = f"http://127.0.0.1:{port}/bench/{name}-{i}"
            results[name].append(fn(base, url))
            shutil.rmtree(base)
finally:
    giftless.kill()
    giftless.wait()

print(f"large-file benchmark: one {size_mib} MiB file + 100 small files, {rounds} rounds, medians")
print(f"{'':14}{'stackctl':>12}{'git-lfs':>12}{'git-lfs/stackctl':>18}")
for k, unit in (("backup", "s"), ("restore", "s"), ("backup_rss", "MiB"), ("restore_rss", "MiB")):
    s = statistics.median(r[k] for r in results["stackctl"])
    g = statistics.median(r[k] for r in results["git-lfs"])
    print(f"{k:14}{s:10.2f}{unit:>2}{g:10.2f}{unit:>2}{g / s:18.2f}")
PY
