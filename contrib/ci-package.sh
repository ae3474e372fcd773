#!/usr/bin/env bash
# Packaging check, run by .ci/run: the systemd unit passes `systemd-analyze
# verify`, `cargo deb` builds the Debian package, `dpkg -i` installs it,
# `postern check` accepts the installed /etc/postern/postern.toml (as root and
# as the postern user), and `dpkg -r` / `dpkg --purge` remove it cleanly.
# Needs root (dpkg); installs systemd (for systemd-analyze) and cargo-deb only
# when missing. Prints "package: N passed, M failed"; exits non-zero on a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "package: needs root or sudo for dpkg" >&2; exit 2; }
    SUDO=(sudo)
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "package: installing systemd (for systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "package: cargo install cargo-deb --locked (once per machine)"
    cargo install cargo-deb --locked --quiet
fi

# dpkg with a wait for its lock (an apt-get elsewhere on the machine holds it for a while).
dpkg_() {
    local out tries=0
    until out="$("${SUDO[@]}" dpkg "$@" 2>&1)"; do
        if grep -q "lock" <<<"$out" && (( tries < 60 )); then
            tries=$((tries + 1))
            sleep 5
            continue
        fi
        echo "$out" >&2
        return 1
    done
}

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1" >&2; }
check() {
    local name="$1"; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# A package left by an interrupted earlier run would hide what this one installs.
if dpkg -s postern >/dev/null 2>&1; then
    dpkg_ --purge postern
fi

echo "package: cargo deb"
rm -f target/debian/postern_*.deb
POSTERN_DEFAULT_CONFIG=/etc/postern/postern.toml cargo deb --quiet -- --locked >/dev/null
DEB="$(ls -t target/debian/postern_*.deb | head -n 1)"
echo "package: built $DEB"

contents() {
    local listing
    listing="$(dpkg-deb --contents "$DEB")"
    for f in ./usr/bin/postern ./lib/systemd/system/postern.service ./etc/postern/postern.toml \
             ./usr/share/doc/postern/operations.md ./usr/share/doc/postern/configuration.md \
             ./usr/share/doc/postern/LICENSE-MIT ./usr/share/doc/postern/LICENSE-APACHE; do
        grep -q " $f\$" <<<"$listing" || { echo "missing $f" >&2; return 1; }
    done
}
check "the package holds the binary, the unit, the conffile, docs and licenses" contents
conffiles() { dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | grep -qx /etc/postern/postern.toml; }
check "/etc/postern/postern.toml is a conffile" conffiles

# The documented `cargo install --path .`, into a scratch root; with the same
# flags as the package build it reuses that build instead of compiling again.
INSTALL_ROOT="$(mktemp -d)"
trap 'rm -rf "$INSTALL_ROOT"' EXIT
POSTERN_DEFAULT_CONFIG=/etc/postern/postern.toml \
    cargo install --path . --locked --quiet --root "$INSTALL_ROOT" --target-dir target 2>/dev/null
installed_check() {
    (cd / && "$INSTALL_ROOT/bin/postern" check --config "$ROOT/config/postern.toml" >/dev/null)
}
check "cargo install --path . gives a postern that checks config/postern.toml from /" installed_check

dpkg_ -i "$DEB"
check "dpkg -i installs /usr/bin/postern" test -x /usr/bin/postern
check "systemd-analyze verify accepts the installed unit" \
    systemd-analyze verify /lib/systemd/system/postern.service
check "systemd-analyze verify accepts contrib/systemd/postern.service" \
    systemd-analyze verify contrib/systemd/postern.service
has_user() { id postern >/dev/null; }
check "the postern system user exists" has_user
state_dir() { [[ "$(stat -c '%U:%G %a' /var/lib/postern)" == "postern:postern 750" ]]; }
check "/var/lib/postern is postern's, mode 750" state_dir
conf_mode() { [[ "$(stat -c '%U:%G %a' /etc/postern/postern.toml)" == "root:postern 640" ]]; }
check "/etc/postern/postern.toml is root:postern 640" conf_mode

default_check() {
    local out
    out="$(cd / && /usr/bin/postern check)" || return 1
    grep -q '^/etc/postern/postern.toml: OK$' <<<"$out"
}
check "postern check (no --config) checks /etc/postern/postern.toml" default_check
help_default() { /usr/bin/postern --help | grep -q 'else /etc/postern/postern.toml\]'; }
check "postern --help names /etc/postern/postern.toml as the default" help_default
check "postern check --config /etc/postern/postern.toml" \
    /usr/bin/postern check --config /etc/postern/postern.toml
as_postern() {
    "${SUDO[@]}" setpriv --reuid=postern --regid=postern --init-groups \
        /usr/bin/postern check >/dev/null
}
check "the postern user can read and check its config" as_postern

dpkg_ -r postern
check "dpkg -r removes the binary" test ! -e /usr/bin/postern
check "dpkg -r removes the unit" test ! -e /lib/systemd/system/postern.service
check "dpkg -r keeps the edited-or-not conffile" test -f /etc/postern/postern.toml
dpkg_ --purge postern
check "dpkg --purge removes the config" test ! -e /etc/postern/postern.toml
check "dpkg --purge removes /var/lib/postern" test ! -e /var/lib/postern
not_installed() { ! dpkg -s postern >/dev/null 2>&1; }
check "no postern package is left" not_installed

echo "package: $passed passed, $failed failed"
(( failed == 0 ))
