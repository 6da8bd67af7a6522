#!/usr/bin/env bash
# A local Argilla 2.8 stack for review rounds and for the tests: Redis, an in-memory
# OpenSearch-compatible search engine (osmem-server), the Argilla server and its worker,
# all on 127.0.0.1, with an owner user whose API key is known.
#
#   annotation/stack/argilla_stack.sh install   # redis-server (apt) + .venv-argilla (pip); idempotent
#   annotation/stack/argilla_stack.sh up        # install if needed, start, wait until ready
#   eval "$(annotation/stack/argilla_stack.sh env)"   # export ARGILLA_API_URL / ARGILLA_API_KEY
#   annotation/stack/argilla_stack.sh status
#   annotation/stack/argilla_stack.sh down      # stop everything this script started
#
# Settings (environment):
#   ARGILLA_STACK_DIR     state folder: pids, logs, database, stack.env (default .cache/argilla-stack)
#   ARGILLA_STACK_VENV    server venv (default .venv-argilla); its pins clash with the SDK's, so it is separate
#   ARGILLA_STACK_PORT    UI/API port; default 6900 when free, else a free port; 0 = any free port
#   ARGILLA_STACK_USERNAME / ARGILLA_STACK_PASSWORD / ARGILLA_STACK_API_KEY   the owner user
#   ARGILLA_STACK_PYTHON  interpreter for the venv (default python3)
#   ARGILLA_STACK_TIMEOUT seconds to wait for readiness (default 180)
#
# The search engine is in memory, so every `up` starts from an empty database: push again after a restart.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${ARGILLA_STACK_DIR:-$REPO/.cache/argilla-stack}"
VENV="${ARGILLA_STACK_VENV:-$REPO/.venv-argilla}"
PY="${ARGILLA_STACK_PYTHON:-python3}"
OWNER="${ARGILLA_STACK_USERNAME:-owner}"
PASSWORD="${ARGILLA_STACK_PASSWORD:-toolkit-owner}"
API_KEY="${ARGILLA_STACK_API_KEY:-toolkit.owner.apikey}"
TIMEOUT="${ARGILLA_STACK_TIMEOUT:-180}"
SERVER_PINS=("argilla-server==2.8.0" "click<8.2" "osmem-server")
PROCS=(worker argilla osmem redis)  # stop order

say() { echo "argilla-stack: $*" >&2; }
die() { say "error: $*"; exit 1; }

# -- install -------------------------------------------------------------------

install_redis() {
    command -v redis-server >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "redis-server is not installed; run: sudo apt-get install -y redis-server"
    say "installing redis-server (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends redis-server >/dev/null; } \
        || die "apt-get install redis-server failed"
}

install_venv() {
    [ -f "$VENV/.installed" ] && return 0
    say "creating $VENV (argilla-server 2.8.0, osmem-server)"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${SERVER_PINS[@]}" >"$VENV/pip-install.log" 2>&1 \
        || { grep -v "^WARNING: Location" "$VENV/pip-install.log" | tail -n 20 >&2; die "pip install ${SERVER_PINS[*]} into $VENV failed"; }
    "$VENV/bin/python" -c "import argilla_server, osmem_server" || die "argilla_server does not import in $VENV"
    touch "$VENV/.installed"
}

cmd_install() {
    local t0=$SECONDS
    install_redis
    install_venv
    say "installed ($((SECONDS - t0)) s): redis-server $(redis-server --version | grep -o 'v=[^ ]*'), $VENV"
}

# -- processes ------------------------------------------------------------------

free_port() {  # $1: preferred port or empty
    "$PY" - "$1" <<'EOF'
import socket, sys
want = int(sys.argv[1]) if sys.argv[1] else 0
for port in ([want] if want else []) + [0]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1])
        break
    except OSError:
        continue
    finally:
        s.close()
EOF
}

start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }

spawn() {  # $1 name, rest: command. A new session, so `down` can stop it with its children.
    local name="$1"; shift
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$STATE/$name.pid"
}

alive() {  # $1 name: the recorded process still runs (same pid and start time)
    local f="$STATE/$1.pid" pid st
    [ -f "$f" ] || return 1
    read -r pid st <"$f"
    [ -n "$pid" ] && [ -n "$st" ] && [ "$(start_time "$pid")" = "$st" ]
}

stop() {  # $1 name
    local f="$STATE/$1.pid" pid st i
    [ -f "$f" ] || return 0
    read -r pid st <"$f"
    if alive "$1"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do alive "$1" || break; sleep 0.1; done
        alive "$1" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$f"
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

fail_start() {
    local name
    for name in "${PROCS[@]}"; do
        [ -f "$STATE/logs/$name.log" ] && { say "--- last lines of $name.log"; tail -n 15 "$STATE/logs/$name.log" >&2; }
    done
    cmd_down >/dev/null 2>&1 || true
    die "$1"
}

cmd_up() {
    if [ -f "$STATE/stack.env" ] && alive argilla && alive redis && alive osmem; then
        # shellcheck disable=SC1091
        . "$STATE/stack.env"
        http_ok "$ARGILLA_API_URL/api/v1/version" && { say "already running at $ARGILLA_API_URL"; return 0; }
    fi
    cmd_down >/dev/null 2>&1 || true
    cmd_install
    local t0=$SECONDS
    rm -rf "$STATE/logs" "$STATE/home" "$STATE/tmp" "$STATE/redis"
    mkdir -p "$STATE/logs" "$STATE/home" "$STATE/tmp" "$STATE/redis"

    local redis_port os_port port
    redis_port=$(free_port "")
    os_port=$(free_port "")
    case "${ARGILLA_STACK_PORT:-}" in
        "") port=$(free_port 6900) ;;
        0) port=$(free_port "") ;;
        *) port=$(free_port "$ARGILLA_STACK_PORT"); [ "$port" = "$ARGILLA_STACK_PORT" ] || die "port $ARGILLA_STACK_PORT is taken; set ARGILLA_STACK_PORT to a free port (or 0)" ;;
    esac

    spawn redis redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
        --dir "$STATE/redis" --daemonize no --protected-mode yes
    local osmem_bin
    osmem_bin=$("$VENV/bin/python" -c "import osmem_server; print(osmem_server.resolve_binary())") || fail_start "osmem-server is missing in $VENV (rm -rf $VENV and run install)"
    spawn osmem "$osmem_bin" -addr "127.0.0.1:$os_port" -no-stdin-watch -no-ja

    export ARGILLA_HOME_PATH="$STATE/home"
    export ARGILLA_SEARCH_ENGINE=opensearch
    export ARGILLA_ELASTICSEARCH="http://127.0.0.1:$os_port"
    export ARGILLA_REDIS_URL="redis://127.0.0.1:$redis_port/0"
    export ARGILLA_AUTH_SECRET_KEY="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
    export ARGILLA_ENABLE_TELEMETRY=0 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1
    export ARGILLA_SHOW_HUGGINGFACE_SPACE_PERSISTENT_STORAGE_WARNING=false
    export TMPDIR="$STATE/tmp"  # the server copies its UI files into a temporary folder on each start

    local i
    for i in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && http_ok "http://127.0.0.1:$os_port/" && break
        sleep 0.1
    done
    alive redis || fail_start "redis-server did not start"
    alive osmem || fail_start "osmem-server did not start"

    "$VENV/bin/python" -m argilla_server database migrate >"$STATE/logs/migrate.log" 2>&1 \
        || fail_start "database migration failed (see $STATE/logs/migrate.log)"
    "$VENV/bin/python" -m argilla_server database users create --first-name Owner --username "$OWNER" \
        --password "$PASSWORD" --role owner --api-key "$API_KEY" >"$STATE/logs/users.log" 2>&1 \
        || fail_start "creating the owner user failed (see $STATE/logs/users.log)"

    spawn argilla "$VENV/bin/python" "$REPO/annotation/stack/argilla_launch.py" start --host 127.0.0.1 --port "$port"
    spawn worker "$VENV/bin/python" "$REPO/annotation/stack/argilla_launch.py" worker --num-workers 1

    local url="http://127.0.0.1:$port"
    until http_ok "$url/api/v1/version"; do
        alive argilla || fail_start "the Argilla server exited (see $STATE/logs/argilla.log)"
        alive worker || fail_start "the Argilla worker exited (see $STATE/logs/worker.log)"
        [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || fail_start "the Argilla server was not ready after $TIMEOUT s"
        sleep 0.3
    done
    cat >"$STATE/stack.env" <<EOF
ARGILLA_API_URL=$url
ARGILLA_API_KEY=$API_KEY
ARGILLA_USERNAME=$OWNER
ARGILLA_PASSWORD=$PASSWORD
EOF
    say "ready at $url in $((SECONDS - t0)) s (owner $OWNER / $PASSWORD, API key $API_KEY)"
    say "use it: eval \"\$($0 env)\"; stop it: $0 down"
}

cmd_down() {
    local name
    for name in "${PROCS[@]}"; do stop "$name"; done
    rm -f "$STATE/stack.env"
    rm -rf "$STATE/tmp" "$STATE/home" "$STATE/redis"
    say "stopped"
}

cmd_env() {
    [ -f "$STATE/stack.env" ] || die "no stack is running (no $STATE/stack.env); start it with: $0 up"
    sed -n 's/^\(ARGILLA_API_URL\|ARGILLA_API_KEY\)=\(.*\)$/export \1=\2/p' "$STATE/stack.env"
}

cmd_status() {
    local name
    for name in redis osmem argilla worker; do
        if alive "$name"; then echo "$name: running (pid $(cut -d' ' -f1 "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
    done
    if [ -f "$STATE/stack.env" ]; then
        # shellcheck disable=SC1091
        . "$STATE/stack.env"
        if http_ok "$ARGILLA_API_URL/api/v1/version"; then echo "ready: $ARGILLA_API_URL"; return 0; fi
    fi
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *) echo "usage: $0 install|up|down|env|status" >&2; exit 2 ;;
esac
