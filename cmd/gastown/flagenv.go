package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/cockroachdb/errors"
)

// envRule is the rule of flags from the environment, printed by every
// help that has such flags and by the top-level help.
const envRule = `A flag marked (env GASTOWN_X) may also be set by that environment variable:
GASTOWN_ + the flag's name upper-cased, '-' as '_'. A flag given on the
command line wins over the environment; the environment wins over the
default.`

// envScope is the rule of which commands take which flags from the
// environment, for the top-level help and the README.
const envScope = `The daemons (coordinator, container) take every flag from the environment
(but a container's --tls-* flags, which default to GASTOWN_NATS_CA, _CERT and
_KEY); the admin verbs only --server and --timeout; ops context only --server;
token mint, tool and agent none (an agent's environment is its container's,
and names its town and identity, never an admin's choice), nor cluster.`

// envBound names, for each command (its flag set's name), the flags the
// environment may set; "*" is every flag but those named "-flag". The daemons are configured by
// their environment (systemd units, containers); the admin verbs only in
// where and how long to call, never in what they act on (a --town from an
// agent's GASTOWN_TOWN_ID, say, would act on the wrong town by surprise).
var envBound = func() map[string][]string {
	m := map[string][]string{
		"coordinator": {"*"},
		// A container's TLS flags are a client's, read from GASTOWN_NATS_CA,
		// _CERT and _KEY (what its agents get too): GASTOWN_TLS_CERT is the
		// coordinator's server certificate, and must not become a container's
		// client certificate in a shared environment.
		"container":   {"*", "-tls-ca", "-tls-cert", "-tls-key"},
		"ops context": {"server"},
	}
	for _, verb := range adminVerbs {
		m[verb] = []string{"server", "timeout"}
	}
	return m
}()

// adminVerbs are the commands that connect as admin (addAdminFlags).
var adminVerbs = []string{
	"town create", "town list", "town show", "town delete",
	"rig add", "rig list", "rig remove",
	"bead create", "bead list", "bead show",
	"convoy create", "convoy list", "convoy show",
	"sling", "status", "token rotate", "token revoke",
}

// envVar is the environment variable of a flag: GASTOWN_ + its name
// upper-cased with '-' as '_'.
func envVar(flagName string) string {
	return "GASTOWN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envBoundFlag is whether the environment may set the flag of the command.
func envBoundFlag(cmd, flagName string) bool {
	bound := false
	for _, n := range envBound[cmd] {
		switch n {
		case "-" + flagName:
			return false
		case "*", flagName:
			bound = true
		}
	}
	return bound
}

// applyEnv sets each bound flag not given on the command line from its
// environment variable, when that is set. A value the flag refuses is a
// usage error naming the variable.
func applyEnv(fs *flag.FlagSet, env Env) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] || !envBoundFlag(fs.Name(), f.Name) {
			return
		}
		name := envVar(f.Name)
		v := env.Getenv(name)
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = errors.Mark(errors.WithHint(errors.Newf("environment variable %s=%q is not a valid --%s: %v", name, v, f.Name, serr),
				fmt.Sprintf("fix or unset %s; see gastown %s --help", name, fs.Name())), ErrUsage)
		}
	})
	return err
}

// printFlags prints fs's flags as flag.PrintDefaults does, each bound
// flag with its environment variable; nothing when fs has no flags.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	var b strings.Builder
	bound := false
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(&b, "  -%s", f.Name)
		typ, usage := flag.UnquoteUsage(f)
		if typ != "" {
			fmt.Fprintf(&b, " %s", typ)
		}
		b.WriteString("\n    \t")
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		if !zeroDefault(f) {
			if typ == "string" {
				fmt.Fprintf(&b, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(&b, " (default %s)", f.DefValue)
			}
		}
		if envBoundFlag(fs.Name(), f.Name) {
			fmt.Fprintf(&b, " (env %s)", envVar(f.Name))
			bound = true
		}
		b.WriteString("\n")
	})
	if b.Len() == 0 {
		return
	}
	fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	if bound {
		fmt.Fprintf(w, "\n%s\n", envRule)
	}
}

// zeroDefault is whether a flag's default is its type's zero value, which
// flag.PrintDefaults leaves out too.
func zeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s":
		return true
	}
	return false
}
