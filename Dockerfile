# The image of AstrBot + NapCat + Gemini Balance run by stackctl (PID 1) from
# the repository's stack.yaml, for a Hugging Face Space or any container host.
#
#   docker build -t astrbot-space \
#     --build-arg ASTRBOT_DIST_SHA256=... --build-arg NAPCAT_APPIMAGE_SHA256=... .
#   docker run --stop-timeout 120 -p 7860:7860 \
#     -e github_project=you/astrbot-data -e github_secret=ghp_... astrbot-space
#
# Every path below is the one stack.yaml names; tests/integration/deployment.rs
# checks that the two files agree, and that every download is verified.
# Versions are pinned here and in deploy/*.lock (never HEAD); to upgrade an
# app, change its ARG and its lock file, and rebuild.

# stackctl's toolchain: the one CI builds and tests with.
ARG RUST_VERSION=1.95
# Debian 12: its python3 is 3.11.2, the Python the lock files in deploy/ are
# resolved for (AstrBot 4.14.6 is the newest release for Python 3.11).
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
# stackctl, built from this repository with the locked dependencies.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS stackctl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
 && install -m 0755 target/release/stackctl /usr/local/bin/stackctl

# ---------------------------------------------------------------------------
# The files of the apps that do not come from PyPI, downloaded and verified;
# only their files go on. AstrBot itself and both apps' Python packages are
# installed from PyPI in the runtime stage, from the lock files in deploy/
# (every package pinned with its hash).
FROM debian:${DEBIAN_RELEASE}-slim AS apps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# AstrBot: its web UI (dist.zip) comes from the release of the same version
# as the AstrBot package in deploy/astrbot.lock.
ARG ASTRBOT_VERSION=4.14.6
# NapCat: the AppImage build NapCat-v4.8.124 on QQ 40990 (the original's).
ARG NAPCAT_VERSION=v4.8.124
ARG NAPCAT_QQ_BUILD=40990
# Gemini Balance: a commit of snailyp/gemini-balance (VERSION 2.1.6).
ARG GEMINI_BALANCE_COMMIT=d1be5487b6a3f9ebc950ccd948f4ffd35a56a96c
# The SHA-256 of the two release assets, which have no other verification.
# Required, without defaults: give the sums you checked (GitHub shows each
# asset's sha256 on the release page, or `curl -fsSL URL | sha256sum`):
#   docker build --build-arg ASTRBOT_DIST_SHA256=... --build-arg NAPCAT_APPIMAGE_SHA256=... .
# (On a Space, set them as Variables: Spaces pass variables as build args.)
ARG ASTRBOT_DIST_SHA256
ARG NAPCAT_APPIMAGE_SHA256

# A throw-away stage: unpinned download tools are fine (see the runtime stage).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git unzip \
 && rm -rf /var/lib/apt/lists/*

# The web UI is baked in: AstrBot would otherwise download it at every start,
# since data/dist is not backed up. `.astrbot` marks AstrBot's root.
WORKDIR /out/home/user/AstrBot
RUN curl -fsSL --retry 5 -o /tmp/dist.zip "https://github.com/AstrBotDevs/AstrBot/releases/download/v${ASTRBOT_VERSION}/dist.zip" \
 && echo "${ASTRBOT_DIST_SHA256:?set --build-arg ASTRBOT_DIST_SHA256 to the sha256 of the AstrBot dist.zip}  /tmp/dist.zip" | sha256sum -c - \
 && mkdir -p data \
 && unzip -q /tmp/dist.zip -d data \
 && test -d data/dist \
 && rm /tmp/dist.zip \
 && touch .astrbot

# Fetched by commit id: git checks every object against it.
WORKDIR /out/home/user/gemini-balance-main
RUN git init -q . \
 && git fetch -q --depth 1 https://github.com/snailyp/gemini-balance.git "${GEMINI_BALANCE_COMMIT}" \
 && git checkout -q FETCH_HEAD \
 && test "$(git rev-parse HEAD)" = "${GEMINI_BALANCE_COMMIT}" \
 && rm -rf .git \
 && test -f app/main.py -a -f requirements.txt

# Extracted at build time: no FUSE at run time, and no 500 MB unpacked at
# every start as `--appimage-extract-and-run` would (stack.yaml sets the
# APPDIR that it would have set).
WORKDIR /out/app
RUN curl -fsSL --retry 5 -o QQ.AppImage "https://github.com/NapNeko/NapCatAppImageBuild/releases/download/${NAPCAT_VERSION}/QQ-${NAPCAT_QQ_BUILD}_NapCat-${NAPCAT_VERSION}-amd64.AppImage" \
 && echo "${NAPCAT_APPIMAGE_SHA256:?set --build-arg NAPCAT_APPIMAGE_SHA256 to the sha256 of the NapCat AppImage}  QQ.AppImage" | sha256sum -c - \
 && chmod +x QQ.AppImage \
 && ./QQ.AppImage --appimage-extract >/dev/null \
 && mv squashfs-root napcat \
 && rm QQ.AppImage \
 && test -x napcat/AppRun

# ---------------------------------------------------------------------------
# The runtime: Python for AstrBot and Gemini Balance, the X/GTK libraries and
# Xvfb that NapCat's QQ needs, and stackctl as PID 1 — plus what the original
# image had and users rely on: a C compiler and headers (AstrBot plugins and
# `pilk` for QQ voice build from source), git, Node.js with npm (`npx` MCP
# servers) and uv/uvx.
FROM debian:${DEBIAN_RELEASE}-slim
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Every persisted path (stack.yaml `persist.paths`), the backup workdir (which
# holds the gateway's state file) and the apps' directories are created here,
# empty and owned by UID 1000, before the apps are copied in: restore writes
# into them. (A `chown -R` after the copy would duplicate every file of the
# apps into one more layer.)
#
# Debian's stable release only ever updates its packages for security fixes,
# and the base image tag fixes the release: pinning each version would break
# the build at every point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl tzdata git \
      python3 python3-venv python3-dev \
      build-essential libffi-dev libssl-dev \
      nodejs npm \
      ffmpeg \
      xvfb xauth \
      libgtk-3-0 libnss3 libnspr4 libgbm1 libasound2 libxss1 libxtst6 libxkbfile1 \
      libatk1.0-0 libatk-bridge2.0-0 libcups2 libdrm2 libxcomposite1 libxdamage1 \
      libxrandr2 libxkbcommon0 libsecret-1-0 libnotify4 \
      fonts-noto-cjk \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --home-dir /home/user --uid 1000 --shell /bin/bash user \
 && install -d -o 1000 -g 1000 \
      /app \
      /app/napcat \
      /app/napcat/config \
      /app/.config \
      /app/.config/QQ \
      /home/user/AstrBot \
      /home/user/AstrBot/data \
      /home/user/config \
      /home/user/gemini-balance-main \
      /home/user/gemini-data \
      /home/user/nginx \
      /home/user/.astrbot-backup \
      /home/user/.astrbot-backup/state \
      /home/user/synclogs

# Spaces run the container as UID 1000 with HOME=/home/user.
ENV HOME=/home/user \
    TZ=Asia/Shanghai \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STACKCTL_FILE=/etc/stackctl/stack.yaml

COPY --from=apps --chown=1000:1000 /out/home/user/ /home/user/
COPY --from=apps --chown=1000:1000 /out/app/ /app/
COPY deploy/ /opt/deploy/

# uv and uvx on PATH, from their lock file.
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --require-hashes --no-deps -r /opt/deploy/tools.lock \
 && ln -s /opt/uv/bin/uv /opt/uv/bin/uvx /usr/local/bin/ \
 && test -x /usr/local/bin/uv -a -x /usr/local/bin/uvx \
 && test -f /opt/deploy/astrbot-data-guard.py

USER 1000:1000

# Both apps' packages exactly as locked (the lock files say how they were
# made and tested); pip refuses any file whose hash differs.
WORKDIR /home/user/AstrBot
RUN python3 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r /opt/deploy/astrbot.lock \
 && test -x .venv/bin/astrbot

WORKDIR /home/user/gemini-balance-main
RUN python3 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r /opt/deploy/gemini-balance.lock \
 && test -x .venv/bin/uvicorn

COPY --from=stackctl /usr/local/bin/stackctl /usr/local/bin/stackctl
COPY stack.yaml /etc/stackctl/stack.yaml

WORKDIR /home/user
EXPOSE 7860
# 200 once restore has finished and every enabled service is ready. Restoring
# a large backup can take minutes, hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:7860/admin/healthz"]
# stackctl is PID 1: it reaps orphans, forwards SIGTERM to the services, takes
# the final backup and exits within stack.yaml's shutdown_timeout (110 s:
# run with `docker run --stop-timeout 120`; a Space's card asks for 2 minutes).
CMD ["stackctl", "up"]
