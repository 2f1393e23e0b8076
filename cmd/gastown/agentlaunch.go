package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentpreset"
)

const agentLaunchDesc = `
Starts a coding agent's CLI as this container agent, with the gastown MCP
server registered: what 'gastown container --agent <preset>' runs for each
agent. In the run's workspace (the working directory) it writes the CLI's
MCP configuration under .gastown/ (kept out of git), naming this binary's
'gastown mcp' and the agent's environment (never the token: the server
reads the token file at every call), then becomes the CLI:

  claude    claude -p "<prompt>" --mcp-config .gastown/mcp.json --strict-mcp-config
              --permission-mode acceptEdits --allowedTools mcp__gastown,Bash
  codex     CODEX_HOME=<workspace>/.gastown/codex (config.toml: [mcp_servers.gastown])
            codex exec --sandbox danger-full-access --skip-git-repo-check "<prompt>"
  opencode  OPENCODE_CONFIG=<workspace>/.gastown/opencode.json (its mcp section)
            opencode run "<prompt>"

The prompt says who the agent is, to call the prime tool first for its
briefing, and the tool that ends its work, followed by GASTOWN_PROMPT.
The CLI must be on PATH, with its own credentials (pass them with the
container's --pass-env, e.g. --pass-env ANTHROPIC_API_KEY).`

func runAgentLaunch(_ context.Context, args []string, env Env) error {
	usage := "agent launch <" + strings.Join(agentpreset.Names[1:], "|") + ">"
	fs := newFlags("agent launch", usage, agentLaunchDesc, env)
	dry := fs.Bool("dry-run", false, "write the configuration and print the command line instead of running it")
	var name string
	var rest []string
	for _, a := range args {
		if name == "" && !strings.HasPrefix(a, "-") {
			name = a
			continue
		}
		rest = append(rest, a)
	}
	if done, err := parse(fs, rest, env); done {
		return err
	}
	if name == "" || name == agentpreset.Sim {
		return errors.Mark(errors.WithHint(errors.New("agent launch needs a CLI preset"),
			"one of "+strings.Join(agentpreset.Names[1:], ", ")+"; the simulated agent is gastown agent sim"), ErrUsage)
	}
	bin, err := os.Executable()
	if err != nil {
		return errors.Wrap(err, "finding this binary for the CLI's MCP configuration")
	}
	dir, err := os.Getwd()
	if err != nil {
		return errors.Wrap(err, "working directory")
	}
	plan, err := agentpreset.Plan(name, bin, dir, env.Getenv)
	if err != nil {
		return errors.Mark(err, ErrUsage)
	}
	if err := plan.Write(dir); err != nil {
		return err
	}
	if *dry {
		return printJSON(env, map[string]any{"argv": plan.Argv, "env": plan.Env, "files": fileNames(plan.Files)})
	}
	path, err := exec.LookPath(plan.Argv[0])
	if err != nil {
		return errors.WithHint(errors.Wrapf(err, "starting the %s agent", name),
			"install the "+plan.Argv[0]+" CLI in the container's image (on PATH), or run the container with --agent sim")
	}
	// Become the CLI: the container's signals (stop, kill) reach it
	// directly, and its exit status is the run's.
	return errors.Wrapf(syscall.Exec(path, plan.Argv, append(os.Environ(), plan.Env...)), "running %s", path)
}

// fileNames lists a plan's files, for --dry-run.
func fileNames(files map[string][]byte) []string {
	var out []string
	for f := range files {
		out = append(out, filepath.ToSlash(f))
	}
	return out
}
