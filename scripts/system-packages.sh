#!/usr/bin/env bash
# Debian packages StitchLab uses: Fashion-MNIST (the bundled zoo's dataset) and Chromium
# (the browser of the end-to-end test). Installs what is missing; never fails `make setup`
# on a machine without apt-get or root, but says what is missing and how to get it.
set -u
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
fi
if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; }; then
  echo "note: cannot install ${missing[*]} here (needs apt-get as root)." >&2
  echo "      Fashion-MNIST is then downloaded by torchvision when online; the browser test needs chromium." >&2
  exit 0
fi
echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update >/dev/null 2>&1
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null || \
    echo "note: apt-get could not install ${missing[*]}" >&2
}
exit 0
