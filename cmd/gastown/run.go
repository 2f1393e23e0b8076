package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// Env is what the process gives Run: its environment and its output.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
}

// ErrUsage marks a mistake in the command line: exit status 2.
var ErrUsage = errors.New("usage")

// verb is one command of the binary.
type verb struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, env Env) error
}

func verbs() []verb {
	return []verb{
		{"coordinator", "run the coordinator daemon (embedded NATS by default)", runCoordinator},
		{"container", "run a town's container: its agents, token file and heartbeats", runContainer},
		{"token", "mint, rotate or revoke a town's container token", runToken},
		{"town", "create, list, show or delete towns (admin)", runTown},
		{"rig", "add, list or remove rigs: git repositories of a town (admin)", runRig},
		{"bead", "create, list or show beads: units of work (admin)", runBead},
		{"convoy", "create, list or show convoys of beads (admin)", runConvoy},
		{"sling", "hook a bead to a polecat and dispatch it (admin)", runSling},
		{"ops", "write a nats CLI context for the read-only ops identity", runOps},
		{"cluster", "init, check or start a NATS cluster for Gastown (auth callout)", runCluster},
		{"status", "show towns, or a town's agents, beads and convoys, as tables (admin)", runStatus},
		{"tool", "call a coordinator tool as this agent (inside a container)", runTool},
		{"agent", "run a built-in agent (agent sim: no LLM needed) or a coding agent's CLI (agent launch)", runAgent},
		{"mcp", "serve this agent's tools over MCP on stdio (inside a container)", runMCP},
		{"version", "print the version, commit and Go version of this binary", runVersion},
		{"conformance", "prove a container, in any language, against docs/PROTOCOL.md", runConformance},
	}
}

const topUsage = `gastown runs fleets of coding agents over NATS.

Usage:
  gastown <command> [flags]

Commands:
%s
Run 'gastown <command> --help' for a command's flags.

Environment:
%s

%s
`

func usageTop(w io.Writer) {
	var b strings.Builder
	for _, v := range verbs() {
		fmt.Fprintf(&b, "  %-12s %s\n", v.name, v.summary)
	}
	fmt.Fprintf(w, topUsage, b.String(), indent(envRule), indent(envScope))
}

// Run runs the command named by args. It is main without the process.
func Run(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		usageTop(env.Stderr)
		return errors.Mark(errors.New("no command given"), ErrUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usageTop(env.Stdout)
		return nil
	case "--version", "-version":
		return runVersion(ctx, args[1:], env)
	}
	for _, v := range verbs() {
		if v.name == args[0] {
			return v.run(ctx, args[1:], env)
		}
	}
	usageTop(env.Stderr)
	return errors.Mark(errors.Newf("unknown command %q", args[0]), ErrUsage)
}

// newFlags makes a flag set that prints a usage with a description and
// every flag's default, and reports errors instead of exiting.
func newFlags(name, usage, description string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: gastown %s\n\n%s\n", usage, strings.TrimSpace(description))
		printFlags(out, fs)
	}
	return fs
}

// parse parses flags, then sets the flags not given from the environment
// (flagenv.go); --help prints usage to stdout and ends with no error. A
// bad flag is an error printed once, by main.
func parse(fs *flag.FlagSet, args []string, env Env) (done bool, err error) {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return true, nil
		}
	}
	fs.SetOutput(io.Discard) // the flag package would print the error, and main again
	perr := fs.Parse(args)
	fs.SetOutput(env.Stderr)
	if perr != nil {
		return true, errors.Mark(errors.WithHint(perr, "run 'gastown "+fs.Name()+" --help' for its flags"), ErrUsage)
	}
	if fs.NArg() > 0 {
		return true, errors.Mark(errors.Newf("unexpected argument %q", fs.Arg(0)), ErrUsage)
	}
	if err := applyEnv(fs, env); err != nil {
		return true, err
	}
	return false, nil
}

// exitCode maps an error to the process's exit status.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	}
	var e *schemas.Error
	if errors.As(err, &e) {
		if code, ok := toolExitCodes[e.Code]; ok {
			return code
		}
	}
	return 1
}

// printError writes the error and its hints.
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "gastown: %v\n", err)
	for _, h := range errors.GetAllHints(err) {
		fmt.Fprintf(w, "hint: %s\n", h)
	}
}

// helpTo prints fs's usage on stdout: asked-for help is output, not an error.
func helpTo(env Env, fs *flag.FlagSet) {
	fs.SetOutput(env.Stdout)
	fs.Usage()
}

// indent indents every line of s by two spaces.
func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
