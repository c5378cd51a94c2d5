#!/usr/bin/env bash
# Installs what relaycast needs on a Debian machine, only what is missing.
#   install-deps.sh run   ffmpeg (the service's media engine)
#   install-deps.sh test  ffmpeg, nginx + libnginx-mod-rtmp (RTMP peers), openssl (test certificates),
#                         procps (pgrep, ps), GStreamer's RTSP server for Debian's python3 (the RTSP
#                         test source), sqlite3, moto[server], cfn-lint, chromium + chromium-driver
#                         (the headless browser that plays the recordings, driven over WebDriver)
# Never downloads a binary: everything comes from Debian's packages or PyPI.
set -euo pipefail
mode=${1:-run}

need_apt=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
if [ "$mode" = test ]; then
  command -v nginx >/dev/null || need_apt+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need_apt+=(libnginx-mod-rtmp)
  command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
  command -v openssl >/dev/null || need_apt+=(openssl)
  { command -v pgrep >/dev/null && command -v ps >/dev/null; } || need_apt+=(procps)
  # tests/playback_browser.rs: Debian's Chromium and its WebDriver.
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
  # tests/peers/rtsp_server.py: GStreamer's RTSP server with x264 and AAC, for Debian's own
  # /usr/bin/python3 (python3-gi is built for it, not for a pyenv or virtualenv python3).
  for pkg in python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need_apt+=("$pkg")
  done
  # The Python test peers, installed with pip below.
  pip_missing=()
  # moto 5.2.2 fixed the root element of CompleteMultipartUpload's answer, which the AWS SDK's
  # S3 client refuses otherwise (multipart uploads of recordings, adapters/aws/tests/contract_s3.rs).
  moto_req='moto[server]>=5.2.2'
  if command -v python3 >/dev/null; then
    python3 -c 'import sys, moto.server, moto; sys.exit(tuple(map(int, moto.__version__.split(".")[:3])) < (5, 2, 2))' 2>/dev/null \
      || pip_missing+=("$moto_req")
  else
    pip_missing+=("$moto_req")
    need_apt+=(python3)
  fi
  # `--version`, not `command -v`: a pyenv shim is on PATH even when no Python has cfn-lint.
  cfn-lint --version >/dev/null 2>&1 || pip_missing+=(cfn-lint)
  # Debian's python3 comes without pip.
  if [ ${#pip_missing[@]} -gt 0 ] && ! { command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; }; then
    need_apt+=(python3-pip)
  fi
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "relaycast needs these Debian packages: ${need_apt[*]}; run as root or: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "$mode" = test ]; then
  # Debian's nginx package starts a system nginx on port 80; the tests run their own instances.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then systemctl stop nginx || true; fi
  if [ ${#pip_missing[@]} -gt 0 ]; then
    echo "installing ${pip_missing[*]}"
    # A Debian python3 refuses a plain install (externally managed environment, PEP 668): then
    # install anyway. Any other failure is shown as pip reported it.
    pip_log=$(mktemp)
    if ! python3 -m pip install -q "${pip_missing[@]}" 2>"$pip_log"; then
      if grep -q externally-managed-environment "$pip_log"; then
        python3 -m pip install -q --break-system-packages "${pip_missing[@]}"
      else
        cat "$pip_log" >&2
        rm -f "$pip_log"
        exit 1
      fi
    fi
    rm -f "$pip_log"
    command -v cfn-lint >/dev/null \
      || echo "cfn-lint is installed but not on PATH: add pip's script directory (e.g. ~/.local/bin) to PATH" >&2
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "relaycast builds with Rust 1.85 or newer: install it with rustup, then run this again" >&2
  exit 1
fi
