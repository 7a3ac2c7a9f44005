#!/usr/bin/env bash
# `make test-qgis-lts`: the QGIS-facing tests on QGIS 3.40 LTR (Debian 13 "trixie": QGIS 3.40, Python 3.13,
# numpy 2, torch from Debian's python3-torch), in a chroot made with debootstrap.
#
#   tools/qgis_lts.sh build            # create or finish the chroot (idempotent, resumable)
#   tools/qgis_lts.sh test [PYTEST..]  # build if needed, copy the plugin + tests in, run the QGIS-facing tests
#   tools/qgis_lts.sh test all         # the whole suite there (numpy 2, Python 3.13, torch 2.6), but the
#                                      # packaging tests, which need the venv's tools (about 9 minutes)
#   tools/qgis_lts.sh shell            # a shell in the chroot (mounts set up and removed)
#
# The chroot lives outside the checkout, in $HYPERNET_LTS_ROOT (default /var/cache/hypernet-qgis-lts), and is
# made once (about 5 minutes and 3.4 GB); each stage leaves a stamp, so an interrupted build resumes. Needs root
# and access to deb.debian.org (debootstrap itself is installed with apt-get when missing).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${HYPERNET_LTS_ROOT:-/var/cache/hypernet-qgis-lts}"
ROOT="$CACHE/rootfs"
SUITE="${HYPERNET_LTS_SUITE:-trixie}"
MIRROR="${HYPERNET_LTS_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="qgis python3-qgis qgis-providers python3-gdal python3-torch python3-spectral python3-matplotlib
          python3-pytest xauth"
# The QGIS-facing tests run there: provider and plugin, qgis_process, the engine in its child process, the LTS
# checks.
DEFAULT_TESTS="tests/test_qgis_lts.py tests/test_qgis_plugin.py tests/test_qgis_process.py tests/test_engine_process.py"

die() { echo "test-qgis-lts: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts); run it with sudo."

MOUNTED=()
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -R "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
trap unmount_all EXIT INT TERM

mount_all() {
    # /proc, /sys and /dev for the chroot; rslave so nothing unmounted here propagates back to the host.
    mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc"); }
    mountpoint -q "$ROOT/sys" || { mount --rbind /sys "$ROOT/sys"; mount --make-rslave "$ROOT/sys"; MOUNTED+=("$ROOT/sys"); }
    mountpoint -q "$ROOT/dev" || { mount --rbind /dev "$ROOT/dev"; mount --make-rslave "$ROOT/dev"; MOUNTED+=("$ROOT/dev"); }
}

release_mounts_under() {
    # everything still mounted below $1 (deepest first), e.g. left by an interrupted run or debootstrap
    local target
    for target in $(findmnt -rn -o TARGET | grep -F "$1/" | sort -r); do
        umount -R "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done
}

in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

build() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9 || die "could not lock $CACHE/.lock"
    if [ ! -f "$CACHE/.stage1-debootstrap" ]; then
        command -v debootstrap >/dev/null || { apt-get update -qq && \
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap; }
        # a half-made root from an interrupted debootstrap: unmount what it left mounted, start again (25 s)
        release_mounts_under "$ROOT"
        [ ! -e "$ROOT" ] || rm -rf --one-file-system "$ROOT"
        echo "test-qgis-lts: debootstrap $SUITE into $ROOT"
        debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || \
            die "debootstrap failed; see $CACHE/debootstrap.log"
        touch "$CACHE/.stage1-debootstrap"
    fi
    if [ ! -f "$CACHE/.stage2-packages" ]; then
        echo "test-qgis-lts: installing QGIS 3.40, torch and spectral from Debian $SUITE (a few minutes, once)"
        cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
        release_mounts_under "$ROOT"
        mount_all
        # resumable: finish what an interrupted run left, then install (apt skips what is there)
        in_root dpkg --configure -a
        in_root apt-get update -qq
        # shellcheck disable=SC2086
        in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES \
            >"$CACHE/apt.log" 2>&1 || die "apt-get install failed in the chroot; see $CACHE/apt.log"
        in_root apt-get clean
        unmount_all
        touch "$CACHE/.stage2-packages"
    fi
    flock -u 9
}

copy_in() {
    # The assembled plugin (what the zip holds) and the tests, fresh each run.
    local work="$ROOT/opt/hypernet-tests"
    rm -rf "$work" && mkdir -p "$work/build"
    python3 "$REPO/tools/package.py" assemble "$work/build/hypernet_qgis" >/dev/null
    cp -r "$REPO/tests" "$work/tests"
    cp -r "$REPO/tools" "$work/tools"
    cp -r "$REPO/resources" "$work/resources"
    cp "$REPO/metadata.txt" "$REPO/LICENSE" "$REPO/requirements.txt" "$REPO/pyproject.toml" \
       "$REPO/README.md" "$REPO/.secrets.baseline" "$work/"
    cp -r "$REPO/hypernet_qgis" "$work/hypernet_qgis"
    find "$work" -name __pycache__ -prune -exec rm -rf {} +
}

case "${1:-test}" in
    build)
        build ;;
    shell)
        build; mount_all; in_root bash ;;
    test)
        shift || true
        tests="${*:-$DEFAULT_TESTS}"
        [ "$tests" != all ] || tests="tests --ignore=tests/test_package.py"
        start=$(date +%s)
        build
        copy_in
        mount_all
        in_root python3 -c "import qgis.core as q, numpy, torch, sys; print('QGIS', q.Qgis.version(), '| Python', \
sys.version.split()[0], '| numpy', numpy.__version__, '| torch', torch.__version__)"
        set +e
        # shellcheck disable=SC2086
        in_root env QT_QPA_PLATFORM=offscreen HYPERNET_LTS=1 sh -c \
            "cd /opt/hypernet-tests && python3 -m pytest -q -p no:cacheprovider $tests"
        rc=$?
        set -e
        echo "test-qgis-lts: exit $rc after $(( $(date +%s) - start )) s"
        exit $rc ;;
    *)
        die "unknown command '$1' (build, test or shell)" ;;
esac
