package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/mcpserver"
)

// runSimViaMCP is `gastown agent sim --via-mcp`: the simulated agent as an
// MCP client of a `gastown mcp` child process (this same binary) started
// with the agent's own environment.
func runSimViaMCP(ctx context.Context, env Env, work time.Duration, log *slog.Logger) error {
	if env.Getenv(agentclient.EnvTokenFile) == "" {
		return errors.Mark(errors.Newf("%s is not set: agent sim runs inside a container", agentclient.EnvTokenFile), ErrUsage)
	}
	bin, err := os.Executable()
	if err != nil {
		return errors.Wrap(err, "finding this binary to run gastown mcp")
	}
	dir, err := os.Getwd()
	if err != nil {
		return errors.Wrap(err, "working directory")
	}
	cs, err := mcpserver.Dial(ctx, bin, nil, os.Environ(), env.Stderr)
	if err != nil {
		return err
	}
	defer func() { _ = cs.Close() }()
	return mcpserver.RunSim(ctx, cs, mcpserver.SimConfig{Work: work, Dir: dir, Logger: log})
}
