#!/usr/bin/env python3
"""Check that `rust-version` in Cargo.toml (the MSRV) is true.

Two parts, both cheap and offline:
- every package in the locked dependency graph declares a `rust-version` at or
  below ours (else a user on our MSRV cannot build the lock file we ship);
- clippy's `incompatible_msrv` lint (on by default, run by .ci/run) flags our own
  use of a standard-library API newer than the MSRV.
A build with the MSRV toolchain itself would need to download it, which CI
cannot do; these two checks catch what such a build would.
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split("-")[0].split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    ours = next(p for p in meta["packages"] if p["id"] in meta["workspace_members"])
    msrv = ours.get("rust_version")
    if not msrv:
        sys.exit("Cargo.toml declares no rust-version (the MSRV)")
    used = {n["id"] for n in meta["resolve"]["nodes"]}
    newer = sorted(
        (p["name"], p["version"], p["rust_version"])
        for p in meta["packages"]
        if p["id"] in used
        and p.get("rust_version")
        and version(p["rust_version"]) > version(msrv)
    )
    if newer:
        lines = "\n".join(f"  {n} {v} needs Rust {r}" for n, v, r in newer)
        sys.exit(
            f"rust-version is {msrv}, but the locked dependencies need more:\n{lines}\n"
            "raise rust-version in Cargo.toml, or pin those crates lower in Cargo.lock"
        )
    print(f"MSRV {msrv}: all {len(used)} locked packages build with it")


if __name__ == "__main__":
    main()
