#!/usr/bin/env bash
# A screenshot of the Argilla UI showing a dataset's records, with headless Chromium
# (Debian: apt-get install -y chromium). Used for docs/review-argilla-ui.png.
#
#   eval "$(bash annotation/stack/argilla_stack.sh env)"
#   bash annotation/stack/screenshot.sh demo-cot review docs/review-argilla-ui.png
#
# ARGILLA_API_URL / ARGILLA_API_KEY find the dataset; the UI signs in as ARGILLA_USERNAME /
# ARGILLA_PASSWORD (default: the local stack's owner) through the sign-in page's `auth` parameter.
set -euo pipefail

DATASET="${1:?usage: $0 DATASET [WORKSPACE] [OUT.png]}"
WORKSPACE="${2:-review}"
OUT="${3:-review-argilla-ui.png}"
URL="${ARGILLA_API_URL:?set ARGILLA_API_URL (eval \"\$(bash annotation/stack/argilla_stack.sh env)\")}"
KEY="${ARGILLA_API_KEY:?set ARGILLA_API_KEY}"
USERNAME="${ARGILLA_USERNAME:-owner}"
PASSWORD="${ARGILLA_PASSWORD:-toolkit-owner}"
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$CHROMIUM" ] || { echo "chromium is not installed; run: apt-get install -y chromium" >&2; exit 1; }

api() { curl -fsS -H "X-Argilla-Api-Key: $KEY" "$URL$1"; }
ws_id=$(api /api/v1/me/workspaces | python3 -c 'import json, sys
print(next((w["id"] for w in json.load(sys.stdin)["items"] if w["name"] == sys.argv[1]), ""))' "$WORKSPACE")
id=$(api /api/v1/me/datasets | python3 -c 'import json, sys
print(next((d["id"] for d in json.load(sys.stdin)["items"] if d["name"] == sys.argv[1] and d["workspace_id"] == sys.argv[2]), ""))' "$DATASET" "$ws_id")
[ -n "$id" ] || { echo "no dataset $DATASET in workspace $WORKSPACE at $URL" >&2; exit 1; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --hide-scrollbars "--user-data-dir=$profile")
auth=$(printf '%s:%s' "$USERNAME" "$PASSWORD" | base64 -w0)
# 1) sign in (the session is kept in the profile), 2) open the dataset and take the picture
"$CHROMIUM" "${flags[@]}" --virtual-time-budget=15000 --dump-dom "$URL/sign-in?auth=$auth" >/dev/null 2>&1
"$CHROMIUM" "${flags[@]}" --window-size=${ARGILLA_SHOT_SIZE:-1440,1400} --virtual-time-budget=20000 --screenshot="$OUT" \
    "$URL/dataset/$id/annotation-mode" >/dev/null 2>&1
echo "screenshot: $OUT ($(du -k "$OUT" | cut -f1) KB)"
