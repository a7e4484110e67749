"""Refuse to start AstrBot on data written by a newer AstrBot.

Run by stack.yaml's `astrbot-guard` service, with AstrBot's own Python, in
AstrBot's root, before AstrBot starts. The original deployment ran AstrBot
from its newest source, so a migrated backup may come from a newer AstrBot
than the image's; starting an older one on it is an untested downgrade (its
database may have tables and columns the older one does not know).

How "newer" is told, first hit wins:
  1. data/.astrbot-version: written here after every check that passed, the
     newest AstrBot version that ran on this data (backed up with the data);
  2. data/dist/assets/version: the web UI's version, which AstrBot downloads
     to match itself (the original backed it up);
  3. data/data_v4.db has tables that no table definition of the installed
     AstrBot names (a newer AstrBot created them).

Exit 0: the data is not newer (the version file is written); exit 1 with a
message: it is. ASTRBOT_ALLOW_DOWNGRADE=1 starts anyway (after a backup of
your own). --installed and --package override what is read from the
installed package (for tests).
"""

import argparse
import importlib.metadata
import importlib.util
import os
import re
import sqlite3
import sys
from pathlib import Path

MARKER = Path("data/.astrbot-version")
TABLE_DEF = re.compile(
    r"""__tablename__\s*(?::\s*\w+\s*)?=\s*["'](\w+)["']|CREATE TABLE (?:IF NOT EXISTS )?["'`]?(\w+)""",
    re.IGNORECASE,
)


def version_key(text):
    """`v4.22.1` -> (4, 22, 1); None when it is not a version."""
    nums = re.findall(r"\d+", text.strip().lstrip("vV").split("-")[0].split("+")[0])
    return tuple(int(n) for n in nums[:3]) if nums else None


def known_tables(package):
    """Every table the installed AstrBot defines anywhere in its source."""
    names = set()
    for src in Path(package).rglob("*.py"):
        try:
            text = src.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for m in TABLE_DEF.finditer(text):
            names.add((m.group(1) or m.group(2)).lower())
    return names


def unknown_tables(db, known):
    if not db.is_file():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    return sorted(
        n for (n,) in rows if not n.lower().startswith("sqlite_") and n.lower() not in known
    )


def newer_data(installed, package):
    """Why the data is newer than `installed`, or None."""
    mine = version_key(installed)
    for path in (MARKER, Path("data/dist/assets/version")):
        if path.is_file():
            theirs = path.read_text(encoding="utf-8", errors="replace").strip()
            key = version_key(theirs)
            if key and mine and key > mine:
                return f"{path} says it was written by AstrBot {theirs}"
            if key:
                return None
    tables = unknown_tables(Path("data/data_v4.db"), known_tables(package))
    if tables:
        return "data/data_v4.db has tables this AstrBot does not define (" + ", ".join(tables) + ")"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--installed")
    ap.add_argument("--package")
    args = ap.parse_args()
    installed = args.installed or importlib.metadata.version("astrbot")
    package = args.package
    if package is None:
        spec = importlib.util.find_spec("astrbot")
        package = Path(spec.origin).parent if spec and spec.origin else Path(".")
    why = newer_data(installed, package)
    if why and os.environ.get("ASTRBOT_ALLOW_DOWNGRADE") != "1":
        print(
            f"error: the restored AstrBot data is newer than the installed AstrBot {installed}: {why}.\n"
            "Starting an older AstrBot on it is an untested downgrade, so AstrBot is not started.\n"
            "Build the image with a newer AstrBot (its version in the Dockerfile and deploy/astrbot.lock),\n"
            "or restore an older snapshot (`stackctl restore --at DATE`), or set ASTRBOT_ALLOW_DOWNGRADE=1\n"
            "to start anyway once you have a copy of your data.",
            file=sys.stderr,
        )
        return 1
    if why:
        print(f"warning: starting AstrBot {installed} on newer data ({why}): ASTRBOT_ALLOW_DOWNGRADE=1", file=sys.stderr)
        return 0
    MARKER.parent.mkdir(parents=True, exist_ok=True)
    recorded = MARKER.read_text(encoding="utf-8").strip() if MARKER.is_file() else ""
    if version_key(recorded) != version_key(installed):
        MARKER.write_text(installed + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
