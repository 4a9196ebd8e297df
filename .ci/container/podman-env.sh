# Source me. Podman settings that work on this project's machines (Debian 12, root without
# CAP_SYS_RESOURCE, a hybrid cgroup v1/v2 layout, no systemd, no container registry reachable).
# From the project machines' container-smoke tools (../shared/tools/container-smoke/env.sh), kept here so CI
# needs nothing outside the repository.
PODMAN_DIR=${PODMAN_DIR:-/tmp/merlion-podman}
export CONTAINERS_CONF=$PODMAN_DIR/containers.conf
mkdir -p "$PODMAN_DIR"
if [ ! -f "$CONTAINERS_CONF" ]; then
cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
# podman's default nofile/nproc limits fail here with "setrlimit ... Operation not permitted"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun 1.8.1 refuses this host's hybrid cgroup layout; runc works
runtime = "runc"
EOF
fi
PODMAN="podman --root $PODMAN_DIR/storage --runroot $PODMAN_DIR/runroot"
BASE_IMAGE=localhost/bookworm-py311
