#!/usr/bin/env bash
# Makes sure the Debian packages the local cloud needs are present.
# As root it installs what is missing; otherwise it prints the exact command to run.
set -euo pipefail

packages=(docker-registry skopeo shellcheck)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ! command -v java >/dev/null 2>&1; then
  missing+=(default-jre-headless)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

emulator=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
if [ ! -x "$emulator" ] && ! command -v gcloud >/dev/null 2>&1; then
  echo "the Pub/Sub emulator is missing: install the Google Cloud CLI with its pubsub-emulator component" >&2
  exit 1
fi
