#!/bin/sh
# A test agent: records its environment and working directory, prints a
# line to its log, then exits with $AGENT_EXIT or sleeps until stopped.
out="$AGENT_OUT/$GASTOWN_AGENT_ID-$GASTOWN_RUN_ID"
# With AGENT_IGNORE_TERM it notes SIGTERM and carries on: only SIGKILL ends it.
if [ -n "$AGENT_IGNORE_TERM" ]; then trap 'touch "$out.term"' TERM; fi
env > "$out.env"
echo $$ > "$out.pid"
pwd > "$out.pwd"
git rev-parse --abbrev-ref HEAD > "$out.branch" 2>/dev/null || true
touch "$out.ready"
echo "agent $GASTOWN_AGENT_ID run $GASTOWN_RUN_ID started"
if [ -n "$AGENT_EXIT" ]; then exit "$AGENT_EXIT"; fi
while :; do sleep 0.05; done
