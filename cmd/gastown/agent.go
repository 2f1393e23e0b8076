package main

import (
	"context"
	"os"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/agentclient/sim"
)

const agentSimDesc = `
A built-in agent for running the whole flow without an LLM. Started by a
container (e.g. --polecat-cmd "gastown agent sim"), it primes, works for a
while, and reports with the same tools a real agent uses: a polecat commits
and pushes its branch and calls done; a refinery merges the branch on its
hook and calls review.complete; a triage agent restarts the agent it
triages; a mayor waits until it is stopped. With --via-mcp it makes every
call through a 'gastown mcp' child process, as an MCP client, the way a
real coding agent does (make demo-mcp).

'gastown agent launch <claude|codex|opencode>' starts a coding agent's CLI
with the gastown MCP server registered instead (see its --help).`

func runAgent(ctx context.Context, args []string, env Env) error {
	if len(args) > 0 && args[0] == "launch" {
		return runAgentLaunch(ctx, args[1:], env)
	}
	if done, err := subcommand(args, "sim", newFlags("agent", "agent sim [--work 2s] [--fail] [--via-mcp]", agentSimDesc, env), env); done {
		return err
	}
	fs := newFlags("agent sim", "agent sim [--work 2s] [--fail] [--via-mcp]", agentSimDesc, env)
	work := fs.Duration("work", 2*time.Second, "how long the simulated work takes")
	fail := fs.Bool("fail", false, "exit with an error at once (exercises failure paths)")
	viaMCP := fs.Bool("via-mcp", false, "make every call through a `gastown mcp` child process, as an MCP client, the way a real coding agent does")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if done, err := parse(fs, args[1:], env); done {
		return err
	}
	log, err := newLogger(env.Stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	if *fail {
		return errors.New("simulated failure (--fail)")
	}
	if *viaMCP {
		return runSimViaMCP(ctx, env, *work, log)
	}
	tokenFile := env.Getenv(agentclient.EnvTokenFile)
	if tokenFile == "" {
		return errors.Mark(errors.Newf("%s is not set: agent sim runs inside a container", agentclient.EnvTokenFile), ErrUsage)
	}
	url := env.Getenv(agentclient.EnvNatsURL)
	if url == "" {
		url = agentclient.DefaultURL
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute) // the bus may be restarting
	tls := agentclient.TLSFromEnv(env.Getenv)
	if err := tls.Validate(); err != nil {
		cancel()
		return errors.Mark(err, ErrUsage)
	}
	sess, err := agentclient.OpenFileSession(cctx, url, tokenFile, 30*time.Second, tls.Option())
	cancel()
	if err != nil {
		return err
	}
	defer sess.Close()
	dir, err := os.Getwd()
	if err != nil {
		return errors.Wrap(err, "working directory")
	}
	client := agentclient.NewClient(sess, env.Getenv(agentclient.EnvAgentID), env.Getenv(agentclient.EnvRigID))
	return sim.Run(ctx, client, sim.Config{Work: *work, Dir: dir, RunID: env.Getenv(agentclient.EnvRunID), Logger: log})
}
