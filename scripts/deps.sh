# Shared by scripts/up and scripts/test: install Debian packages that are missing.
# Only calls apt-get when something is missing; never uses sudo.

ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them as root: apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust 1.85 or newer with rustup (https://rustup.rs), then run this again" >&2
    exit 2
  fi
}

# What the desktop daemon needs at run time.
RUNTIME_PACKAGES=(xvfb xauth xfonts-base openbox x11vnc novnc tesseract-ocr tesseract-ocr-eng ca-certificates bubblewrap)
