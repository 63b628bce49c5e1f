#!/usr/bin/env bash
# The Debian packages that waterbirds-photos is built from (xgir.data.waterbirds_photos.PACKAGES),
# each with a file that shows it is installed.
#   scripts/debian-packages.sh            install the missing ones (apt-get; sudo when not root)
#   scripts/debian-packages.sh --missing  print the missing ones (nothing when all are there)
set -euo pipefail
declare -A probe=(
    [tuxpaint-stamps-default]=/usr/share/tuxpaint/stamps/animals/birds/drake.png
    [plasma-workspace-wallpapers]=/usr/share/wallpapers/Path
    [mate-backgrounds]=/usr/share/backgrounds/mate/nature/Aqua.jpg
    [lomiri-wallpapers-16.04]=/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg
)
missing=""
for pkg in "${!probe[@]}"; do
    [ -e "${probe[$pkg]}" ] || missing="$missing $pkg"
done
if [ "${1:-}" = "--missing" ]; then
    echo "$missing"
    exit 0
fi
[ -z "${missing// /}" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: waterbirds-photos needs the Debian packages$missing (no apt-get here: install them, or build the benchmark from your own photos with xgir data shift)" >&2
    exit 2
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
