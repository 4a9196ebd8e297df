#!/bin/bash
# From ../shared/tools/container-smoke/make-base.sh (kept here so CI needs nothing outside the repository).
# Builds a stand-in for python:3.11-slim (Debian bookworm minbase + python3.11 + pip + venv)
# without any container registry, imports it into podman and tags it
# docker.io/library/python:3.11-slim so an unchanged `FROM python:3.11-slim` resolves to it.
# Needs root and the Debian package mirror this machine is configured with. About 2-3 minutes
# the first time (a ~150 MB tarball is kept in $PODMAN_DIR/base.tar), seconds afterwards.
set -euo pipefail
. "$(dirname "$0")/podman-env.sh"
export DEBIAN_FRONTEND=noninteractive
need=""
for p in podman buildah runc slirp4netns uidmap debootstrap curl; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
[ -n "$need" ] && { apt-get update -q && apt-get install -y -q $need; }

if [ ! -f "$PODMAN_DIR/base.tar" ]; then
  R=$PODMAN_DIR/rootfs
  rm -rf "$R"
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  debootstrap --variant=minbase bookworm "$R" ${mirror:+"$mirror"}
  # same package sources and trusted CA certificates as this machine
  rm -f "$R/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$R/etc/apt/sources.list.d/" 2>/dev/null || true
  mkdir -p "$R/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$R" /bin/sh -ec '
    mount -t proc proc /proc; trap "umount /proc" EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip python-is-python3 ca-certificates
    update-ca-certificates
    apt-get clean; rm -rf /var/lib/apt/lists/*'
  # behave like the official python image: pip may install into the system python
  rm -f "$R"/usr/lib/python3.*/EXTERNALLY-MANAGED
  rm -rf "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/locale/*
  tar --numeric-owner -C "$R" -cf "$PODMAN_DIR/base.tar" .
  rm -rf "$R"
fi
if ! $PODMAN image exists "$BASE_IMAGE"; then
  $PODMAN import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$PODMAN_DIR/base.tar" "$BASE_IMAGE"
fi
$PODMAN tag "$BASE_IMAGE" docker.io/library/python:3.11-slim
