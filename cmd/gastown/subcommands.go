package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/cockroachdb/errors"
)

// sub is one subcommand of a verb.
type sub struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, env Env) error
}

// runSubs runs the subcommand of verb named by args[0]; none, or an
// unknown one, is a usage error listing them, and --help lists them on
// stdout.
func runSubs(ctx context.Context, verb string, args []string, env Env, subs []sub) error {
	names := make([]string, len(subs))
	var b strings.Builder
	for i, s := range subs {
		names[i] = s.name
		fmt.Fprintf(&b, "  %-8s %s\n", s.name, s.summary)
	}
	usage := func(out interface{ Write([]byte) (int, error) }) {
		fmt.Fprintf(out, "Usage: gastown %s <%s> [flags]\n\nSubcommands:\n%s\nRun 'gastown %s <subcommand> --help' for its flags.\n",
			verb, strings.Join(names, "|"), b.String(), verb)
	}
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			usage(env.Stdout)
			return nil
		}
		for _, s := range subs {
			if s.name == args[0] {
				return s.run(ctx, args[1:], env)
			}
		}
		usage(env.Stderr)
		return errors.Mark(errors.Newf("unknown %s subcommand %q: use %s", verb, args[0], orList(names)), ErrUsage)
	}
	usage(env.Stderr)
	return errors.Mark(errors.Newf("%s needs a subcommand: %s", verb, orList(names)), ErrUsage)
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
