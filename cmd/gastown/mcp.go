package main

import (
	"context"
	"io"
	"os"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/mcpserver"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const mcpDesc = `
A Model Context Protocol server on stdin/stdout for a coding agent (Claude
Code, Codex, opencode, ...) to call the coordinator's tools. The agent's
CLI starts it inside the container's agent environment, exactly like
'gastown tool': the role from GASTOWN_AGENT_ROLE, the identity from
GASTOWN_AGENT_ID and GASTOWN_RIG_ID, the run from GASTOWN_RUN_ID (filled in
for done and review.complete), the bus from GASTOWN_NATS_URL (and the TLS
files), and the token from GASTOWN_TOKEN_FILE, read at every call.

It lists exactly the tools the role may call, each with a description for
a model and an input schema derived from the request types; prime returns
the role's markdown briefing. An error reply becomes a tool error (isError)
carrying its code, its message, the retry hint of resource_exhausted, and
what to do; unauthenticated is retried once with a fresh token first.
Logs go to stderr, one line per refused call at info, every call at debug;
never a token or a request body. 'gastown container --agent claude' (or
codex, opencode) registers it with the agent's CLI.`

func runMCP(ctx context.Context, args []string, env Env) error {
	fs := newFlags("mcp", "mcp [--call-timeout 3m]", mcpDesc, env)
	callTimeout := fs.Duration("call-timeout", mcpserver.DefaultCallTimeout, "longest wait for one tool call's answer")
	connectTimeout := fs.Duration("connect-timeout", mcpserver.DefaultConnectTimeout, "longest wait to connect to the bus on the first call")
	logLevel := fs.String("log-level", "warn", "log level on stderr: debug, info, warn or error")
	if done, err := parse(fs, args, env); done {
		return err
	}
	if fs.NArg() > 0 {
		return errors.Mark(errors.Newf("mcp takes no arguments, got %q", fs.Args()), ErrUsage)
	}
	if *callTimeout <= 0 || *connectTimeout <= 0 {
		return errors.Mark(errors.New("--call-timeout and --connect-timeout must be positive"), ErrUsage)
	}
	log, err := newLogger(env.Stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	srv, err := mcpserver.New(mcpserver.Config{Getenv: env.Getenv, CallTimeout: *callTimeout,
		ConnectTimeout: *connectTimeout, Version: readBuildInfo().Version, Logger: log})
	if err != nil {
		return errors.Mark(err, ErrUsage)
	}
	return srv.Run(ctx, &mcp.IOTransport{Reader: os.Stdin, Writer: nopWriteCloser{env.Stdout}})
}

// nopWriteCloser is stdout for the transport, which closes what it writes
// to when the session ends: the process's stdout stays open.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
