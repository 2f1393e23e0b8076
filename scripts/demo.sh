#!/usr/bin/env bash
# make demo: a coordinator and a container on the embedded default, a town
# with a local git repository as its rig, a convoy of three beads slung to
# simulated polecats, merged by the refinery, and the convoy landing.
set -euo pipefail

BIN=${BIN:-$PWD/bin/gastown}
# SIM_FLAGS=--via-mcp (make demo-mcp): the simulated agents make every call
# through a `gastown mcp` child process, as MCP clients, like real agents.
sim="$BIN agent sim ${SIM_FLAGS:-}"
work=$(mktemp -d "${TMPDIR:-/tmp}/gastown-demo.XXXXXX")
port=${DEMO_PORT:-14299}
server=nats://127.0.0.1:$port
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

export GASTOWN_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export GASTOWN_ADMIN_PASSWORD=demo-admin-$RANDOM
admin() { "$BIN" "$@" --server "$server"; }

say "starting the coordinator on $server (logs: $work/coordinator.log)"
"$BIN" coordinator --listen 127.0.0.1:$port --data-dir "$work/data" >"$work/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

say "making a git repository to work on"
git init -q --bare -b main "$work/app.git"
git clone -q "$work/app.git" "$work/seed" 2>/dev/null
( cd "$work/seed" && echo "# app" > README.md && git add README.md &&
  git -c user.name=demo -c user.email=demo@example.invalid commit -qm "initial commit" &&
  git push -q origin HEAD:main )

say "creating town 'demo' with rig 'app'"
admin town create --town demo --owner alice >/dev/null
admin rig add --town demo --rig app --git "$work/app.git" --branch main >/dev/null

say "starting the town's container (logs: $work/container.log)"
GASTOWN_CONTAINER_TOKEN=$("$BIN" token mint --town demo --user alice) \
  "$BIN" container --server "$server" --workdir "$work/container" --heartbeat 2s \
  --polecat-cmd "$sim --work 2s" --refinery-cmd "$sim --work 1s" \
  --triage-cmd "$sim" --mayor-cmd "$sim" >"$work/container.log" 2>&1 &
pids+=($!)

say "slinging a convoy of three beads"
for b in login logout signup; do
  admin bead create --town demo --rig app --id "$b" --title "Add $b" >/dev/null
done
admin convoy create --town demo --title "Accounts" --beads login,logout,signup | grep -o '"beadId": "[^"]*"' | head -1
for b in login logout signup; do
  # exits 15 when the container is not connected yet: the bead stays
  # hooked and is dispatched as soon as it connects
  { admin sling --town demo --bead "$b" || true; } | tr -d '\n ' ; echo
done

say "waiting for the convoy to land"
deadline=$((SECONDS + 90))
while :; do
  st=$(admin status --town demo --json)
  line=$(echo "$st" | tr -d '\n ' | grep -o '"beadId":"[a-z]*","type":"issue","status":"[a-z_]*"' | sed 's/"beadId":"\([a-z]*\)","type":"issue","status":"\([a-z_]*\)"/\1=\2/' | tr '\n' ' ')
  echo "  beads: $line"
  if echo "$st" | tr -d '\n ' | grep -q '"landed":true'; then
    say "convoy landed: every bead merged"
    git --git-dir "$work/app.git" log --oneline main
    exit 0
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "the convoy did not land in time; last logs:" >&2
    tail -20 "$work/coordinator.log" "$work/container.log" >&2
    exit 1
  fi
  sleep 2
done
