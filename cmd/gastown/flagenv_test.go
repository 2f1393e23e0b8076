package main

import (
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/stretchr/testify/require"
)

// helpFlags reads a command's --help: every flag it lists, and the
// environment variable of each flag that has one.
func helpFlags(t *testing.T, args ...string) (flags map[string]string, help string) {
	t.Helper()
	stdout, _, err := run(t, nil, append(args, "--help")...)
	require.NoError(t, err)
	flags = map[string]string{}
	lines := strings.Split(stdout, "\n")
	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)( |$)`)
	envNote := regexp.MustCompile(`env (GASTOWN_[A-Z0-9_]+)\)$`)
	for i, l := range lines {
		m := flagLine.FindStringSubmatch(l)
		if m == nil || i+1 >= len(lines) {
			continue
		}
		flags[m[1]] = ""
		if e := envNote.FindStringSubmatch(lines[i+1]); e != nil {
			flags[m[1]] = e[1]
		}
	}
	return flags, stdout
}

// Which flags of which command the environment sets, as --help shows them.
func TestEnvFlagsInHelp(t *testing.T) {
	t.Run("the daemons: every flag", func(t *testing.T) {
		for _, cmd := range []string{"coordinator", "container"} {
			flags, help := helpFlags(t, cmd)
			require.NotEmpty(t, flags)
			for name, env := range flags {
				if cmd == "container" && strings.HasPrefix(name, "tls-") {
					// A client's TLS settings: GASTOWN_NATS_CA, _CERT, _KEY.
					require.Empty(t, env, "container --%s", name)
					continue
				}
				require.Equal(t, "GASTOWN_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")), env, "%s --%s", cmd, name)
			}
			require.Contains(t, help, "A flag given on the\ncommand line wins over the environment")
		}
		flags, _ := helpFlags(t, "coordinator")
		require.Equal(t, "GASTOWN_LISTEN", flags["listen"])
		require.Equal(t, "GASTOWN_DATA_DIR", flags["data-dir"])
		require.Equal(t, "GASTOWN_NATS_URL", flags["nats-url"])
	})
	t.Run("admin verbs: only where and how long", func(t *testing.T) {
		// Every command that calls the coordinator (it has --server and
		// --timeout) but the daemons: the admin verbs.
		found := 0
		for _, args := range commandLines() {
			flags, _ := helpFlags(t, args...)
			if _, ok := flags["server"]; !ok || args[0] == "container" {
				continue
			}
			if _, ok := flags["timeout"]; !ok {
				continue
			}
			found++
			require.Equal(t, "GASTOWN_SERVER", flags["server"], "%v", args)
			require.Equal(t, "GASTOWN_TIMEOUT", flags["timeout"], "%v", args)
			for name, env := range flags {
				if name != "server" && name != "timeout" {
					require.Empty(t, env, "%v --%s must not come from the environment", args, name)
				}
			}
		}
		require.GreaterOrEqual(t, found, 10)
	})
	t.Run("agents' and offline commands: none", func(t *testing.T) {
		for _, cmd := range [][]string{{"token", "mint"}, {"tool"}, {"agent", "sim"}, {"cluster", "init"}, {"cluster", "check"}, {"cluster", "up"}} {
			flags, help := helpFlags(t, cmd...)
			require.NotEmpty(t, flags, "%v", cmd)
			for name, env := range flags {
				require.Empty(t, env, "%v --%s", cmd, name)
			}
			require.NotContains(t, help, "(env GASTOWN_", "%v", cmd)
		}
	})
	t.Run("the rule is in the top-level help", func(t *testing.T) {
		stdout, _, err := run(t, nil, "--help")
		require.NoError(t, err)
		require.Contains(t, stdout, "GASTOWN_ + the flag's name upper-cased")
		require.Contains(t, stdout, "the admin verbs only --server and --timeout")
	})
}

// commandLines is every command and subcommand of the binary whose help
// has a Flags: section.
func commandLines() [][]string {
	var out [][]string
	subs := []string{"create", "list", "show", "delete", "add", "remove", "mint", "rotate", "revoke", "context", "sim", "init", "check", "up"}
	for _, v := range verbs() {
		for _, args := range append([][]string{{v.name}}, func() [][]string {
			var l [][]string
			for _, s := range subs {
				l = append(l, []string{v.name, s})
			}
			return l
		}()...) {
			env, stdout, _ := envOf(nil)
			if err := Run(context.Background(), append(args, "--help"), env); err != nil {
				continue
			}
			if strings.Contains(stdout.String(), "\nFlags:\n") && strings.HasPrefix(stdout.String(), "Usage: gastown "+strings.Join(args, " ")) {
				out = append(out, args)
			}
		}
	}
	return out
}

// No flag takes an environment variable that already means something else:
// the secrets, the container's bootstrap token, and what a container tells
// its agents. GASTOWN_NATS_URL (the NATS server to use) and
// GASTOWN_TOKEN_FILE (the container's token file) keep their meaning.
func TestEnvFlagsNoClash(t *testing.T) {
	taken := []string{
		"GASTOWN_JWT_SECRET", "GASTOWN_JWT_ACCEPT_SECRETS", "GASTOWN_CONTAINER_TOKEN", "GASTOWN_ADMIN_PASSWORD",
		"GASTOWN_OPS_PASSWORD", "GASTOWN_DEV_SECRET", "GASTOWN_CONTAINER_ID", "GASTOWN_TOWN_ID", "GASTOWN_RIG_ID",
		"GASTOWN_AGENT_ID", "GASTOWN_AGENT_ROLE", "GASTOWN_RUN_ID", "GASTOWN_BEAD_ID", "GASTOWN_SOAK", "GASTOWN_TEST_LOG",
	}
	for _, args := range commandLines() {
		stdout, _, err := run(t, nil, append(args, "--help")...)
		require.NoError(t, err)
		for _, name := range taken {
			require.NotContains(t, stdout, "env "+name+")", "gastown %s", strings.Join(args, " "))
		}
	}
}

// The environment sets a flag not given; the command line wins; a bad
// value names its variable.
func TestEnvFlags(t *testing.T) {
	secret := map[string]string{"GASTOWN_JWT_SECRET": testSecret}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range secret {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	t.Run("the environment sets a flag", func(t *testing.T) {
		// (Were it ignored, the coordinator would stop at its --listen.)
		_, _, err := run(t, with(map[string]string{"GASTOWN_LOG_FORMAT": "xml"}), "coordinator", "--listen", "nowhere", "--data-dir", t.TempDir())
		require.Equal(t, 2, exitCode(err))
		require.Contains(t, err.Error(), `--log-format "xml"`)
	})
	t.Run("the command line wins", func(t *testing.T) {
		// With the flag given, the bad value in the environment is never
		// looked at: the coordinator gets as far as its listen address.
		_, _, err := run(t, with(map[string]string{"GASTOWN_LOG_FORMAT": "xml", "GASTOWN_LOG_LEVEL": "loud"}),
			"coordinator", "--log-format", "text", "--log-level=error", "--listen", "nowhere", "--data-dir", t.TempDir())
		require.Error(t, err)
		require.NotEqual(t, 2, exitCode(err), "%v", err)
		require.Contains(t, err.Error(), `listen address "nowhere"`)
	})
	t.Run("a bad value names the variable", func(t *testing.T) {
		for _, tc := range []struct {
			vars map[string]string
			args []string
			want string
		}{
			{map[string]string{"GASTOWN_TOKEN_TTL": "forever"}, []string{"coordinator", "--listen", "nowhere"}, `GASTOWN_TOKEN_TTL="forever" is not a valid --token-ttl`},
			{map[string]string{"GASTOWN_REPLICAS": "three"}, []string{"coordinator", "--listen", "nowhere"}, `GASTOWN_REPLICAS="three" is not a valid --replicas`},
			{map[string]string{"GASTOWN_HEARTBEAT": "often"}, []string{"container"}, `GASTOWN_HEARTBEAT="often" is not a valid --heartbeat`},
			{map[string]string{"GASTOWN_TIMEOUT": "soon", "GASTOWN_ADMIN_PASSWORD": "pw"}, []string{"status", "--town", "A", "--server", "nats://127.0.0.1:1"}, `GASTOWN_TIMEOUT="soon" is not a valid --timeout`},
		} {
			stdout, _, err := run(t, with(tc.vars), tc.args...)
			require.Equal(t, 2, exitCode(err), "%v", err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, printed(err), "hint: fix or unset")
			require.Empty(t, stdout)
		}
	})
	t.Run("the data directory from the environment", func(t *testing.T) {
		// A directory under a regular file cannot be made: the error names
		// the directory from GASTOWN_DATA_DIR.
		file := t.TempDir() + "/file"
		require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
		env, _, logs := envOf(with(map[string]string{"GASTOWN_DATA_DIR": file + "/sub", "GASTOWN_LISTEN": "127.0.0.1:0"}))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- Run(ctx, []string{"coordinator"}, env) }()
		var err error
		require.Eventually(t, func() bool {
			select {
			case err = <-done:
				return true
			default:
				// A coordinator that ignored the environment runs on the
				// defaults: stop it, and fail below.
				if strings.Contains(logs.String(), "coordinator ready") {
					cancel()
					err = <-done
					return true
				}
				return false
			}
		}, 30*time.Second, 10*time.Millisecond)
		require.Error(t, err, "the coordinator ignored GASTOWN_DATA_DIR")
		require.Contains(t, err.Error(), file+"/sub")
	})
	t.Run("admin --server from the environment, --town never", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		vars := map[string]string{"GASTOWN_ADMIN_PASSWORD": "pw", "GASTOWN_SERVER": "nats://" + addr, "GASTOWN_TIMEOUT": "1s"}
		_, _, err = run(t, vars, "status", "--town", "A")
		require.Error(t, err)
		require.Contains(t, err.Error(), addr, "GASTOWN_SERVER was used")

		// An agent's GASTOWN_TOWN_ID, or a GASTOWN_TOWN, never names the
		// town an admin verb acts on.
		vars["GASTOWN_TOWN_ID"], vars["GASTOWN_TOWN"] = "A", "A"
		_, _, err = run(t, vars, "sling", "--bead", "b")
		require.Equal(t, 2, exitCode(err))
		require.Contains(t, err.Error(), "--town is required")
	})
}

// An admin call refused for its password says that the password is wrong
// or admin is disabled: the server's refusal cannot tell them apart.
func TestAdminRefusedHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bus.Config
	}{
		{"admin disabled", bus.Config{}},
		{"wrong password", bus.Config{AdminPassword: "the-right-one"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := bustest.Start(t, tc.cfg)
			_, _, err := run(t, map[string]string{"GASTOWN_ADMIN_PASSWORD": "a-wrong-one"}, "status", "--town", "A", "--server", srv.ClientURL())
			require.Error(t, err)
			require.Equal(t, 1, exitCode(err))
			p := printed(err)
			require.Contains(t, p, "the coordinator refused the admin password: it is wrong, or the coordinator was started without GASTOWN_ADMIN_PASSWORD (admin disabled)")
			require.NotContains(t, p, "a-wrong-one")
			require.NotContains(t, p, "the-right-one")
		})
	}
}
