package main

import (
	"context"
	"os"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/conformance"
)

const conformanceDesc = `
The conformance kit: proves a container, in any language, against the
contract of docs/PROTOCOL.md. It starts a coordinator of its own (embedded
NATS on a free loopback port, a temporary store, short token lifetimes and
intervals), runs COMMAND as the container under test with the settings of
"Running a container" in its environment (GASTOWN_CONTAINER_TOKEN,
GASTOWN_NATS_URL, GASTOWN_CONTAINER_ID, GASTOWN_TOKEN_FILE, and
GASTOWN_AGENT_COMMAND naming the kit's own agent, which reports what its
container handed it), and drives it through the contract's duties: token.get
and the inbox prefix, the heartbeat interval, the token file, pushed
rotations, moving its connection (make before break, and at once on
revokedBefore), dispatch (workspace, environment allow-list, idempotence,
superseded runs), control.stop, exit codes, hostile input and final
revocation. It prints PASS or FAIL per check and "N passed, M failed", and
exits 1 when any check failed.

The container must stop on SIGTERM. Besides the variables above it gets
PATH, HOME, LANG and TZ (and those named by --container-env), and decoy
secrets that no agent may ever see.

Example:
  gastown conformance container -- gastown container --workdir ./c --stop-grace 1s`

func runConformance(ctx context.Context, args []string, env Env) error {
	if len(args) > 0 && args[0] == "agent" {
		// The kit's own agent, started by the container under test.
		return conformance.RunAgent(ctx, env.Getenv)
	}
	fs := newFlags("conformance", "conformance container [flags] -- COMMAND [ARGS...]", conformanceDesc, env)
	if done, err := subcommand(args, "container", fs, env); done {
		return err
	}
	args = args[1:]
	var command []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, command = args[:i], args[i+1:]
	}
	town := fs.String("town", conformance.DefaultTown, "town the container runs")
	ttl := fs.Duration("token-ttl", conformance.DefaultTokenTTL, "lifetime of every token: the container moves its connection at half of it")
	refresh := fs.Duration("refresh", conformance.DefaultRefreshInterval, "how often the coordinator pushes a rotation (under half of --token-ttl)")
	heartbeat := fs.Duration("heartbeat", conformance.DefaultHeartbeatInterval, "heartbeat interval the coordinator tells the container")
	rotations := fs.Int("rotations", conformance.DefaultRotations, "rotations the kit pushes while an agent calls tools")
	timeout := fs.Duration("timeout", conformance.DefaultTimeout, "how long the container may take to do each thing asked")
	stopWait := fs.Duration("stop-wait", conformance.DefaultStopWait, "how long stopping an agent that ignores SIGTERM may take (the container's grace)")
	workDir := fs.String("work-dir", "", "keep the store, token file, container output and agents' reports here (default: a temporary directory, removed)")
	containerEnv := fs.String("container-env", "", "comma-separated names of variables of this environment the container needs too")
	logLevel := fs.String("log-level", "error", "log level of the kit's own coordinator, to stderr: debug, info, warn or error")
	if done, err := parse(fs, args, env); done {
		return err
	}
	if len(command) == 0 {
		return errors.Mark(errors.WithHint(errors.New("no container command given"),
			"name it after --, e.g. gastown conformance container -- gastown container --workdir ./c"), ErrUsage)
	}
	log, err := newLogger(env.Stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return errors.Wrap(err, "finding this binary for the kit's agent")
	}
	var names []string
	for n := range strings.SplitSeq(*containerEnv, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	_, err = conformance.Run(ctx, conformance.Config{
		Command: command, AgentCommand: "exec " + shellQuote(self) + " conformance agent", Getenv: env.Getenv, ContainerEnv: names,
		WorkDir: *workDir, Town: *town, TokenTTL: *ttl, RefreshInterval: *refresh, HeartbeatInterval: *heartbeat,
		Rotations: *rotations, Timeout: *timeout, StopWait: *stopWait, Out: env.Stdout, Logger: log,
	})
	return err
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
