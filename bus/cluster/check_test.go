package cluster_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gastown/gastown/bus/cluster"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// initDir makes a cluster directory as 'gastown cluster init' does.
func initDir(t *testing.T) (string, cluster.Plan) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cluster")
	plan, err := cluster.NewPlan(filepath.Join(dir, "data"))
	require.NoError(t, err)
	plan, _, err = cluster.Init(dir, plan)
	require.NoError(t, err)
	return dir, plan
}

// edit rewrites node i's config with f.
func edit(t *testing.T, dir string, i int, f func(string) string) {
	t.Helper()
	path := filepath.Join(dir, cluster.NodeConfigFile(i))
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	changed := f(string(raw))
	require.NotEqual(t, string(raw), changed, "the edit changed nothing")
	require.NoError(t, os.WriteFile(path, []byte(changed), 0o600))
}

func TestInitRefusesAnExistingDir(t *testing.T) {
	dir, plan := initDir(t)
	before, err := os.ReadFile(filepath.Join(dir, cluster.PlanFile))
	require.NoError(t, err)
	_, _, err = cluster.Init(dir, plan)
	require.ErrorContains(t, err, "already exists and is not empty")
	after, err := os.ReadFile(filepath.Join(dir, cluster.PlanFile))
	require.NoError(t, err)
	require.Equal(t, before, after)
	for _, f := range []string{cluster.PlanFile, "node-1.conf", "node-2.conf", "node-3.conf", cluster.OpsKeyFile} {
		info, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), f)
	}
}

func TestCheck(t *testing.T) {
	t.Run("as written", func(t *testing.T) {
		dir, _ := initDir(t)
		require.Empty(t, cluster.Check(dir))
		// The break-glass key may be kept elsewhere.
		require.NoError(t, os.Remove(filepath.Join(dir, cluster.OpsKeyFile)))
		require.Empty(t, cluster.Check(dir))
	})
	// A hash of the production cost, as the older configs held.
	const opsHash = "$2a$11$C6UzMDM.H6dfI/f/IKxGhuL4Zm0QyCeZzaY9IYvG2eNA8lTs1qTUe"
	otherAccount, err := nkeys.CreateAccount()
	require.NoError(t, err)
	otherIssuer, err := otherAccount.PublicKey()
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		node int
		edit func(plan cluster.Plan) func(string) string
		want string
	}{{
		name: "a user added to GASTOWN",
		node: 1,
		edit: func(cluster.Plan) func(string) string {
			return func(s string) string {
				return strings.Replace(s, "  GASTOWN {\n    users: [\n", "  GASTOWN {\n    users: [\n      {user: \"sneaky\", password: \"letmein\"}\n", 1)
			}
		},
		want: `node-2.conf: account GASTOWN has a user "sneaky" besides the coordinator's`,
	}, {
		name: "an nkey user added to GASTOWN",
		node: 0,
		edit: func(plan cluster.Plan) func(string) string {
			u, _ := nkeys.CreateUser()
			pub, _ := u.PublicKey()
			return func(s string) string {
				return strings.Replace(s, "  GASTOWN {\n    users: [\n", "  GASTOWN {\n    users: [\n      {nkey: \""+pub+"\"}\n", 1)
			}
		},
		want: "node-1.conf: account GASTOWN has a user U",
	}, {
		name: "a wrong issuer",
		node: 2,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, plan.Keys.Issuer, otherIssuer, 1) }
		},
		want: "node-3.conf: auth_callout issuer is " + otherIssuer + ", not the coordinator's issuer",
	}, {
		name: "a missing xkey",
		node: 0,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, `xkey: "`+plan.Keys.XKey+`"`, "", 1) }
		},
		want: "node-1.conf: auth_callout has no xkey",
	}, {
		name: "a missing auth_users entry",
		node: 1,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string {
				at := strings.LastIndex(s, `"`+plan.Keys.State+`"`)
				return s[:at] + s[at+len(plan.Keys.State)+2:]
			}
		},
		want: "node-2.conf: auth_users lacks the coordinator's key",
	}, {
		name: "the ops key missing from auth_users",
		node: 1,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string {
				at := strings.LastIndex(s, `"`+plan.OpsKey+`"`)
				return s[:at] + s[at+len(plan.OpsKey)+2:]
			}
		},
		want: "node-2.conf: auth_users lacks the break-glass ops key",
	}, {
		name: "an ops password user, as older configs had",
		node: 0,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string {
				s = strings.Replace(s, "      {\n        nkey: \""+plan.OpsKey+"\"", "      {user: \"ops\", password: \""+opsHash+"\"}\n      {\n        nkey: \""+plan.OpsKey+"\"", 1)
				return strings.Replace(s, "auth_users: [\n", "auth_users: [\n\"ops\"\n", 1)
			}
		},
		want: `node-1.conf: account GASTOWN_OPS has a password user "ops": the servers would check its password themselves`,
	}, {
		name: "ops in auth_users",
		node: 2,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, "auth_users: [\n", "auth_users: [\n\"ops\"\n", 1) }
		},
		want: `node-3.conf: auth_users lists "ops"`,
	}, {
		name: "the ops key with wider permissions",
		node: 1,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, `"$JS.API.INFO"`, `">"`, 1) }
		},
		want: "node-2.conf: the permissions of " + "U",
	}, {
		name: "the ops key in the control account",
		node: 0,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string {
				u, _ := nkeys.CreateUser()
				pub, _ := u.PublicKey()
				s = strings.Replace(s, `nkey: "`+plan.OpsKey+`"`, `nkey: "`+pub+`"`, 1)
				return strings.Replace(s, "  GASTOWN {\n    users: [\n", "  GASTOWN {\n    users: [\n      {nkey: \""+plan.OpsKey+"\"}\n", 1)
			}
		},
		want: "is in account GASTOWN, not GASTOWN_OPS",
	}, {
		name: "the ops key missing",
		node: 2,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string {
				u, _ := nkeys.CreateUser()
				pub, _ := u.PublicKey()
				return strings.Replace(s, `nkey: "`+plan.OpsKey+`"`, `nkey: "`+pub+`"`, 1)
			}
		},
		want: "node-3.conf: the break-glass ops key " + "U",
	}, {
		name: "an export from the auth account",
		node: 1,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string {
				return strings.Replace(s, "  GASTOWN_AUTH {\n", "  GASTOWN_AUTH {\n    exports: [{service: \"gastown.auth.throttle\"}]\n", 1)
			}
		},
		want: `node-2.conf: account GASTOWN_AUTH has "exports": it may hold only its users`,
	}, {
		name: "an extra auth user",
		node: 2,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, "auth_users: [\n", "auth_users: [\n\"admin\"\n", 1) }
		},
		want: `node-3.conf: auth_users lists "admin"`,
	}, {
		name: "no callout",
		node: 0,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return s[:strings.LastIndex(s, "authorization {")] }
		},
		want: "node-1.conf: has no authorization { auth_callout }",
	}, {
		name: "a route to the wrong port",
		node: 0,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, plan.ClusterAddr(1)+`"`, plan.Host+`:7999"`, 1) }
		},
		want: "node-1.conf: routes go to",
	}, {
		name: "widened coordinator permissions",
		node: 2,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return strings.Replace(s, `"gastown.town.*.events"`, `">"`, 1) }
		},
		want: "node-3.conf: the permissions of ",
	}, {
		name: "a config that does not parse",
		node: 1,
		edit: func(plan cluster.Plan) func(string) string {
			return func(s string) string { return s + "\n}}}\n" }
		},
		want: "node-2.conf: does not parse",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, plan := initDir(t)
			edit(t, dir, tc.node, tc.edit(plan))
			problems := cluster.Check(dir)
			require.NotEmpty(t, problems)
			require.Contains(t, strings.Join(problems, "\n"), tc.want)
		})
	}
	t.Run("swapped credentials", func(t *testing.T) {
		dir, _ := initDir(t)
		other, _ := initDir(t)
		for _, f := range []string{"issuer.nk", "xkey.nk"} {
			raw, err := os.ReadFile(filepath.Join(other, "coordinator", f))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "coordinator", f), raw, 0o600))
		}
		require.Contains(t, strings.Join(cluster.Check(dir), "\n"), "the credentials are not the ones cluster.json names")
	})
	t.Run("another cluster's ops key", func(t *testing.T) {
		dir, _ := initDir(t)
		other, _ := initDir(t)
		raw, err := os.ReadFile(filepath.Join(other, cluster.OpsKeyFile))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, cluster.OpsKeyFile), raw, 0o600))
		require.Contains(t, strings.Join(cluster.Check(dir), "\n"), "ops.nk: not the ops key cluster.json names")
	})
	t.Run("a readable ops key", func(t *testing.T) {
		dir, _ := initDir(t)
		require.NoError(t, os.Chmod(filepath.Join(dir, cluster.OpsKeyFile), 0o644))
		require.Contains(t, strings.Join(cluster.Check(dir), "\n"), "ops.nk has mode -rw-r--r--: others may read the seed")
	})
	t.Run("a plan of an older gastown", func(t *testing.T) {
		dir, _ := initDir(t)
		path := filepath.Join(dir, cluster.PlanFile)
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		var plan map[string]any
		require.NoError(t, json.Unmarshal(raw, &plan))
		delete(plan, "opsKey")
		plan["opsPasswordHash"] = opsHash
		raw, err = json.Marshal(plan)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, raw, 0o600))
		require.Contains(t, strings.Join(cluster.Check(dir), "\n"), "cluster.json: names no break-glass ops key (opsKey): it was made by an older gastown")
	})
}
