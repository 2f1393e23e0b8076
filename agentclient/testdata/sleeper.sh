#!/bin/sh
# A test agent that records its pid in $SLEEPER_OUT/<agent>-<run>.pid
# (written whole, by rename) and then sleeps until it is stopped.
out="$SLEEPER_OUT/$GASTOWN_AGENT_ID-$GASTOWN_RUN_ID.pid"
echo $$ > "$out.tmp" && mv "$out.tmp" "$out"
exec sleep 600
