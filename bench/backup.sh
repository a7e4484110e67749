#!/usr/bin/env bash
# Backup benchmark: stackctl's persistence vs what the original deployment
# did with the git CLI (mirror the data with rsync, `git add -A`, commit,
# push; restore by `git clone --depth 1` and copying back), on the same
# data set, against local bare repositories, in one run.
#
# Per round, for each tool:
#   cold     first snapshot + push of the whole data set
#   warm     snapshot + push after 10 files changed (stackctl: stat cache)
#   idle     snapshot + push with nothing changed
#   restore  wiped data (and workdir/mirror) -> data back in place
# Prints medians side by side and the ratio git/stackctl (> 1: stackctl faster).
#
# Usage: bench/backup.sh [ROUNDS] [FILES]      (default 3 rounds, 5000 files)
# Env:   STACKCTL_BIN=path to use a prebuilt binary instead of building.
# Not a test: numbers vary with the machine. Installs git and rsync when missing.
set -euo pipefail

rounds=${1:-3}
files=${2:-5000}
root=$(cd "$(dirname "$0")/.." && pwd)

missing=()
command -v git >/dev/null || missing+=(git)
command -v rsync >/dev/null || missing+=(rsync)
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

work=$(mktemp -d /tmp/stackctl-bench-backup.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Not `exec python3`: the EXIT trap must outlive it to remove $work.
python3 - "$bin" "$work" "$rounds" "$files" <<'PY'
import os, random, shutil, statistics, subprocess, sys, time

stackctl, work, rounds, nfiles = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(42)

def run(*args, cwd=None):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def make_data(d):
    # Small files in nested directories, like a bot's data dir: 1-16 KiB each.
    for i in range(nfiles):
        sub = os.path.join(d, f"d{i % 50}", f"e{i % 7}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i}.json"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1024, 16384)))

def touch_some(d, n=10):
    for i in rng.sample(range(nfiles), n):
        p = os.path.join(d, f"d{i % 50}", f"e{i % 7}", f"f{i}.json")
        with open(p, "ab") as f:
            f.write(b"changed")

def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t

def bare(path):
    run("git", "init", "-q", "--bare", "-b", "main", path)

def stackctl_round(base):
    data = os.path.join(base, "data")
    os.makedirs(data)
    make_data(data)
    bare(os.path.join(base, "remote.git"))
    with open(os.path.join(base, "stack.yaml"), "w") as f:
        f.write("name: bench\npersist:\n  remote: ./remote.git\n  workdir: ./work\n  paths: [./data]\n")
    sc = lambda *a: run(stackctl, "-f", os.path.join(base, "stack.yaml"), *a, cwd=base)
    sc("restore")  # confirms the remote empty; opens the gate
    r = {}
    r["cold"] = timed(lambda: sc("backup"))
    touch_some(data)
    r["warm"] = timed(lambda: sc("backup"))
    r["idle"] = timed(lambda: sc("backup"))
    shutil.rmtree(data)
    shutil.rmtree(os.path.join(base, "work"))
    r["restore"] = timed(lambda: sc("restore", "--force"))
    return r

def git_round(base):
    data = os.path.join(base, "data")
    os.makedirs(data)
    make_data(data)
    remote = os.path.join(base, "remote.git")
    bare(remote)
    mirror = os.path.join(base, "mirror")
    run("git", "init", "-q", "-b", "main", mirror)
    run("git", "-C", mirror, "remote", "add", "origin", remote)
    env_id = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    def sync():
        run("rsync", "-a", "--delete", data + "/", os.path.join(mirror, "data") + "/")
        run("git", "-C", mirror, "add", "-A")
        # `commit` fails when nothing changed; the original's script checked first.
        if subprocess.run(["git", "-C", mirror, "diff", "--cached", "--quiet"]).returncode != 0:
            run("git", *env_id, "-C", mirror, "commit", "-q", "-m", "auto")
            run("git", "-C", mirror, "push", "-q", "origin", "main")
    r = {}
    r["cold"] = timed(sync)
    touch_some(data)
    r["warm"] = timed(sync)
    r["idle"] = timed(sync)
    shutil.rmtree(data)
    shutil.rmtree(mirror)
    def restore():
        run("git", "clone", "-q", "--depth", "1", "-b", "main", "file://" + remote, mirror)
        run("rsync", "-a", os.path.join(mirror, "data") + "/", data + "/")
    r["restore"] = timed(restore)
    return r

results = {"stackctl": [], "git CLI": []}
for i in range(rounds):
    # Interleave the tools so drift on a noisy machine hits both alike.
    for name, fn in (("stackctl", stackctl_round), ("git CLI", git_round)):
        base = os.path.join(work, f"{name.replace(' ', '-')}-{i}")
        os.makedirs(base)
        results[name].append(fn(base))
        shutil.rmtree(base)

print(f"backup benchmark: {nfiles} files, {rounds} rounds, medians (seconds)")
print(f"{'':10}{'stackctl':>12}{'git CLI':>12}{'git/stackctl':>14}")
for k in ("cold", "warm", "idle", "restore"):
    s = statistics.median(r[k] for r in results["stackctl"])
    g = statistics.median(r[k] for r in results["git CLI"])
    print(f"{k:10}{s:12.3f}{g:12.3f}{g / s:14.2f}")
PY
