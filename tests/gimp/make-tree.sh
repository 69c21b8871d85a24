#!/usr/bin/env bash
# Builds (once) a Debian tree holding a real GIMP 3 plus the engine's Debian packages, for the
# end-to-end tests. The trees are caches that live outside the clone and are reused between runs.
#   usage: tests/gimp/make-tree.sh trixie|forky [ROOT]
# trixie = Debian 13: GIMP 3.0.4, Python 3.13, python3-torch 2.6
# forky  = Debian testing: GIMP 3.2.x, Python 3.14, python3-torch 2.14
set -euo pipefail
suite=${1:?usage: make-tree.sh trixie|forky [ROOT]}
root=${2:-${NST_TREE_CACHE:-$HOME/.cache/nst-style-transfer}/debian-$suite}
stamp="$root/.nst-tree-ready"
# python3-opencv: the optical flow of animations (the engine's `animation` extra).
packages=(gimp python3-torch python3-torchvision python3-pil python3-numpy python3-yaml
          python3-opencv python3-pytest procps xvfb xauth x11-apps imagemagick xdotool)
want="v3 ${packages[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "tree $root is ready"; exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -x "$root/usr/bin/apt-get" ]; then
    rm -rf "$root"; mkdir -p "$(dirname "$root")"
    script=()
    # Debian 12's debootstrap knows no script named forky; sid's works for it.
    [ -e "/usr/share/debootstrap/scripts/$suite" ] || script=(/usr/share/debootstrap/scripts/sid)
    debootstrap --variant=minbase "$suite" "$root" "$mirror" "${script[@]}"
fi
# The package mirror here may serve a snapshot whose Release file is past its Valid-Until date.
echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99nst-no-valid-until"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
chroot "$root" apt-get clean
echo "$want" > "$stamp"
echo "tree $root is ready"
