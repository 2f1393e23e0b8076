package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nkeys"
)

// checkOpsKey is what is wrong with the plan's break-glass ops key and,
// when present, dir/ops.nk.
func checkOpsKey(dir string, plan Plan) []string {
	planFile := filepath.Join(dir, PlanFile)
	if !nkeys.IsValidPublicUserKey(plan.OpsKey) {
		return []string{fmt.Sprintf("%s: names no break-glass ops key (opsKey): it was made by an older gastown, whose ops user was a password every node checked "+
			"itself, unthrottled; make a new directory with 'gastown cluster init'", planFile)}
	}
	path := filepath.Join(dir, OpsKeyFile)
	if _, err := os.Stat(path); isNotExist(err) {
		return nil // kept elsewhere: the configs are checked against the plan's key
	}
	kp, err := LoadOpsKey(path)
	if err != nil {
		return []string{err.Error()}
	}
	if pub, err := kp.PublicKey(); err != nil || pub != plan.OpsKey {
		return []string{fmt.Sprintf("%s: not the ops key %s names: operators could not get in with it", path, PlanFile)}
	}
	return nil
}

// authAccountKeys are what the auth callout's account may hold in a node
// config: its users, the coordinators' auth keys. An import or export
// would let another account's messages reach where only the coordinators
// may publish: the callout's requests, and the password failures and
// grants the coordinators share (bus.ThrottleSubject, bus.GrantsSubject).
var authAccountKeys = []string{"users"}

// checkAuthAccount is what is wrong with the auth callout's account in
// the config at path, read as written.
func checkAuthAccount(path string) []string {
	m, err := conf.ParseFile(path)
	if err != nil {
		return nil // ProcessConfigFile has said so
	}
	accs, _ := m["accounts"].(map[string]any)
	var auth map[string]any
	for name, a := range accs {
		if name == AuthAccount {
			auth, _ = a.(map[string]any)
		}
	}
	var out []string
	for k := range auth {
		if !slices.Contains(authAccountKeys, strings.ToLower(k)) {
			out = append(out, fmt.Sprintf("account %s has %q: it may hold only its users (the coordinators' auth keys); an import, export or mapping "+
				"could let another account publish where only coordinators may (the callout, the shared password failures and grants)", AuthAccount, k))
		}
	}
	slices.Sort(out)
	return out
}
