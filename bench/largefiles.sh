#!/usr/bin/env bash
# Large-file benchmark: snapshot and restore of one large file (1 GiB by
# default) through stackctl's `dir:` and `lfs` stores, against the physical
# limit of the same bytes on the same machine (`sha256sum FILE` and
# `cp FILE` + fsync), plus stackctl's LFS offload vs the git-lfs CLI against
# the same LFS server (giftless on 127.0.0.1). Tools are interleaved in
# every round; medians are printed.
#
# Per round:
#   baseline     sha256sum FILE; cp FILE DEST + fsync DEST (the file is in
#                the page cache, as it is for stackctl right after writing it);
#                openssl dgst -sha256 FILE for reference (uses SHA-NI where
#                the CPU has it; coreutils' sha256sum may not)
#   dir:         backup   fresh file: hash, then upload to the store (verified)
#                rehash   the same file touched, its blob already stored: the
#                         backup only re-hashes it; minus an unchanged backup's
#                         time, this is stackctl's hashing alone
#                restore  wiped data -> file back from the store (verified)
#   lfs:         backup and restore of the same file through giftless
#   git-lfs:     one SIZE_GITLFS MiB file + 100 small files, stackctl (lfs)
#                vs git + git-lfs (add, commit, push; clone + lfs pull + copy)
# Peak RSS: of the stackctl process (RUSAGE_CHILDREN of a fresh helper);
# growth: minus the peak of an unchanged backup (no large transfer).
# Targets (issue 5): hashing >= 0.8x sha256sum's speed; RSS growth < 32 MiB.
#
# Usage: bench/largefiles.sh [ROUNDS] [SIZE_MIB] [SIZE_GITLFS_MIB]   (default 3, 1024, 256)
# Env:   STACKCTL_BIN=path to use a prebuilt binary; GIFTLESS_VENV (default
#        target/giftless-venv, as .ci/run makes it); BENCH_DIR: where the
#        files live (default /dev/shm when it exists: tmpfs, so the disk
#        does not hide the CPU cost; the baseline runs in the same place).
# Not a test: numbers vary with the machine. Installs git-lfs when missing.
set -euo pipefail

rounds=${1:-3}
size=${2:-1024}
size_gitlfs=${3:-256}
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
# Absolute: every stackctl run has its own working directory.
bin=$(realpath "$bin")

base_dir=${BENCH_DIR:-}
if [ -z "$base_dir" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then base_dir=/dev/shm; else base_dir=/tmp; fi
fi
work=$(mktemp -d "$base_dir/stackctl-bench-large.XXXXXX")
# Not `exec python3`: the trap must outlive it (1 GiB files on tmpfs are RAM).
trap 'rm -rf "$work"' EXIT

python3 - "$bin" "$work" "$rounds" "$size" "$size_gitlfs" "$venv" <<'PY'
import os, resource, shutil, socket, statistics, subprocess, sys, time

stackctl, work, rounds, size_mib, gitlfs_mib, venv = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
MIB = 1 << 20

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
    _, status = os.waitpid(pid, 0)
    if status != 0 or not out:
        sys.exit("a measured command failed")
    dt, rss = out.split()
    return float(dt), int(rss) / 1024

def big_file(path, mib):
    # Every MiB differs: no store or filesystem can shortcut repeated blocks.
    with open(path, "wb") as f:
        chunk = os.urandom(MIB)
        for i in range(mib):
            f.write(chunk[:-8] + i.to_bytes(8, "little"))

def bare(path):
    run("git", "init", "-q", "--bare", "-b", "main", path)

def stack(base, store):
    bare(os.path.join(base, "remote.git"))
    with open(os.path.join(base, "stack.yaml"), "w") as f:
        f.write("name: bench\npersist:\n  remote: ./remote.git\n  workdir: ./work\n  paths: [./data]\n"
                f"  large_files: {{ threshold: 10MiB, {store} }}\n")
    return lambda *a: run(stackctl, "-f", os.path.join(base, "stack.yaml"), *a, cwd=base)

def baseline_round(base):
    os.makedirs(base)
    src, dst = os.path.join(base, "file.bin"), os.path.join(base, "copy.bin")
    big_file(src, size_mib)
    r = {}
    r["sha256sum"], _ = measured(lambda: run("sha256sum", src))
    # A SHA-NI implementation, for reference (coreutils' may not use it).
    r["openssl"], _ = measured(lambda: run("openssl", "dgst", "-sha256", src))
    # cp, then fsync the copy: stackctl syncs what it stores and restores.
    r["cp"], _ = measured(lambda: (run("cp", src, dst), run("sync", dst)))
    return r

def dir_round(base):
    os.makedirs(base)
    data = os.path.join(base, "data")
    os.makedirs(data)
    sc = stack(base, "store: \"dir:./blobs\"")
    sc("restore")
    big = os.path.join(data, "big.bin")
    big_file(big, size_mib)
    r = {}
    r["backup"], r["backup_rss"] = measured(lambda: sc("backup"))
    # Nothing changed: the fixed cost of a backup (git, lease, push check).
    r["idle"], r["idle_rss"] = measured(lambda: sc("backup"))
    # Same bytes, new mtime: the stat cache misses, the file is hashed, and
    # the store already holds the blob: nothing is uploaded or committed.
    os.utime(big)
    r["rehash"], r["rehash_rss"] = measured(lambda: sc("backup"))
    shutil.rmtree(data)
    shutil.rmtree(os.path.join(base, "work"))
    r["restore"], r["restore_rss"] = measured(lambda: sc("restore"))
    return r

def lfs_round(base, lfs_url, mib, small):
    os.makedirs(base)
    data = os.path.join(base, "data")
    os.makedirs(data)
    sc = stack(base, f"store: lfs, url: \"{lfs_url}\"")
    sc("restore")
    big_file(os.path.join(data, "model.bin"), mib)
    for i in range(small):
        with open(os.path.join(data, f"small{i}.json"), "w") as f:
            f.write('{"n": %d}' % i)
    r = {}
    r["backup"], r["backup_rss"] = measured(lambda: sc("backup"))
    shutil.rmtree(data)
    shutil.rmtree(os.path.join(base, "work"))
    r["restore"], r["restore_rss"] = measured(lambda: sc("restore", "--force"))
    return r

def gitlfs_round(base, lfs_url):
    os.makedirs(base)
    data = os.path.join(base, "data")
    os.makedirs(data)
    big_file(os.path.join(data, "model.bin"), gitlfs_mib)
    for i in range(100):
        with open(os.path.join(data, f"small{i}.json"), "w") as f:
            f.write('{"n": %d}' % i)
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
results = {k: [] for k in ("baseline", "dir", "lfs", "stackctl-lfs", "git-lfs")}
try:
    for i in range(rounds):
        # One after the other in every round, so a slow phase of the
        # machine hits all of them.
        steps = (
            ("baseline", lambda b: baseline_round(b)),
            ("dir", lambda b: dir_round(b)),
            ("lfs", lambda b: lfs_round(b, f"http://127.0.0.1:{port}/bench/lfs-{i}", size_mib, 0)),
            ("stackctl-lfs", lambda b: lfs_round(b, f"http://127.0.0.1:{port}/bench/sl-{i}", gitlfs_mib, 100)),
            ("git-lfs", lambda b: gitlfs_round(b, f"http://127.0.0.1:{port}/bench/gl-{i}")),
        )
        for name, fn in steps:
            base = os.path.join(work, f"{name}-{i}")
            results[name].append(fn(base))
            shutil.rmtree(base)
        print(f"round {i + 1} of {rounds} done", file=sys.stderr)
finally:
    giftless.kill()
    giftless.wait()

def med(name, key):
    return statistics.median(r[key] for r in results[name])

size_b = size_mib * MIB
mbps = lambda secs, b=size_b: b / secs / 1e6
sha, cp = med("baseline", "sha256sum"), med("baseline", "cp")
both = sha + cp
idle, idle_rss = med("dir", "idle"), med("dir", "idle_rss")
hashing = max(med("dir", "rehash") - idle, 1e-9)

print(f"large-file benchmark: one {size_mib} MiB file in {os.path.dirname(work)}, {rounds} rounds, medians")
print()
print(f"{'physical limit':34}{'time':>9}{'MB/s':>9}")
print(f"{'sha256sum FILE':34}{sha:8.2f}s{mbps(sha):9.0f}")
print(f"{'cp FILE + fsync':34}{cp:8.2f}s{mbps(cp):9.0f}")
ossl = med("baseline", "openssl")
print(f"{'(openssl dgst -sha256 FILE)':34}{ossl:8.2f}s{mbps(ossl):9.0f}")
print(f"{'sha256sum + cp (= 1.00)':34}{both:8.2f}s{mbps(both):9.0f}")
print()
print(f"{'stackctl':34}{'time':>9}{'MB/s':>9}{'x limit':>9}{'peak RSS':>11}{'growth':>9}")
rows = (
    ("dir: backup (hash + store)", "dir", "backup", both),
    ("dir: restore (fetch + verify)", "dir", "restore", both),
    ("lfs: backup (hash + upload)", "lfs", "backup", both),
    ("lfs: restore (download + verify)", "lfs", "restore", both),
)
growth = []
for label, name, key, limit in rows:
    t, rss = med(name, key), med(name, key + "_rss")
    growth.append(rss - idle_rss)
    print(f"{label:34}{t:8.2f}s{mbps(t):9.0f}{limit / t:9.2f}{rss:8.1f}MiB{rss - idle_rss:6.1f}MiB")
print(f"{'hashing alone (x sha256sum)':34}{hashing:8.2f}s{mbps(hashing):9.0f}{sha / hashing:9.2f}")
print(f"{'hashing alone (x openssl)':34}{'':9}{'':9}{ossl / hashing:9.2f}")
print(f"{'unchanged backup (fixed cost)':34}{idle:8.2f}s{'':9}{'':9}{idle_rss:8.1f}MiB")
print()
ok = lambda c: "met" if c else "NOT met"
print(f"target: hashing >= 0.8x sha256sum       {sha / hashing:.2f}x   {ok(sha / hashing >= 0.8)}")
print(f"target: RSS growth < 32 MiB             {max(growth):.1f} MiB   {ok(max(growth) < 32)}")
print()
print(f"LFS offload vs git-lfs: one {gitlfs_mib} MiB file + 100 small files, giftless on loopback")
print(f"{'':14}{'stackctl':>12}{'git-lfs':>12}{'git-lfs/stackctl':>18}")
for k, unit in (("backup", "s"), ("restore", "s"), ("backup_rss", "MiB"), ("restore_rss", "MiB")):
    s = med("stackctl-lfs", k)
    g = med("git-lfs", k)
    print(f"{k:14}{s:10.2f}{unit:>2}{g:10.2f}{unit:>2}{g / s:18.2f}")
PY
