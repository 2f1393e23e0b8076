package cluster

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// CredsDir is the coordinator's credentials directory in a cluster
// directory.
const CredsDir = "coordinator"

// Check verifies the cluster directory dir as 'gastown cluster init'
// writes it and an operator may have edited it: every node config parses
// and is the node the plan says (listen, routes, their credentials), has
// the accounts of the isolation model with exactly the coordinator's
// users (no other user in GASTOWN, so no way to container permissions
// but the callout), and the auth callout with the plan's issuer, xkey,
// account and auth users; the credentials, when present, are the plan's.
// It returns every problem found, each naming its file; none means the
// set is sound.
func Check(dir string) []string {
	plan, err := ReadPlan(dir)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if err := plan.Keys.Validate(); err != nil {
		problems = append(problems, fmt.Sprintf("%s: keys: %v", filepath.Join(dir, PlanFile), err))
		return problems
	}
	problems = append(problems, checkOpsKey(dir, plan)...)
	if !nkeys.IsValidPublicUserKey(plan.OpsKey) {
		return problems
	}
	credsDir := filepath.Join(dir, CredsDir)
	if _, err := os.Stat(credsDir); err == nil {
		creds, err := LoadCreds(credsDir)
		if err != nil {
			problems = append(problems, err.Error())
		} else if pub, err := creds.Public(); err != nil {
			problems = append(problems, err.Error())
		} else if pub != plan.Keys {
			problems = append(problems, fmt.Sprintf("%s: the credentials are not the ones %s names: the coordinator would fail the callout", credsDir, PlanFile))
		}
	} else if !isNotExist(err) {
		problems = append(problems, fmt.Sprintf("%s: %v", credsDir, err))
	}
	for i := range plan.Nodes {
		path := filepath.Join(dir, NodeConfigFile(i))
		for _, p := range checkNode(plan, i, path) {
			problems = append(problems, path+": "+p)
		}
	}
	return problems
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// checkNode is what is wrong with node i's config.
func checkNode(plan Plan, i int, path string) []string {
	info, err := os.Stat(path)
	if err != nil {
		return []string{fmt.Sprintf("cannot read: %v", err)}
	}
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if info.Mode().Perm()&0o077 != 0 {
		add("mode %v: others may read the route password; chmod 600", info.Mode().Perm())
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return append(out, fmt.Sprintf("does not parse: %v", err))
	}
	keys := plan.Keys

	// Who the node is.
	if opts.ServerName != NodeName(i) {
		add("server_name is %q, not %q", opts.ServerName, NodeName(i))
	}
	if got, want := hostPort(opts.Host, opts.Port), plan.ClientAddr(i); got != want {
		add("listens for clients on %s, not %s as %s says", got, want, PlanFile)
	}
	if opts.Cluster.Name != ClusterName {
		add("cluster name is %q, not %q", opts.Cluster.Name, ClusterName)
	}
	if got, want := hostPort(opts.Cluster.Host, opts.Cluster.Port), plan.ClusterAddr(i); got != want {
		add("listens for routes on %s, not %s as %s says", got, want, PlanFile)
	}
	if opts.Cluster.Username != plan.RouteUser || opts.Cluster.Password != plan.RoutePassword {
		add("route authorization is not the route user and password of %s: the other nodes cannot join it", PlanFile)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
		pw, _ := r.User.Password()
		if r.User == nil || r.User.Username() != plan.RouteUser || pw != plan.RoutePassword {
			add("route %s lacks the route user and password of %s: that node refuses it", r.Host, PlanFile)
		}
	}
	want := plan.routes(i)
	if !sameSet(routes, want) {
		add("routes go to %v, not to the other nodes %v", routes, want)
	}
	if !opts.JetStream {
		add("JetStream is off")
	} else if opts.StoreDir != plan.StoreDir(i) {
		add("JetStream stores under %q, not %q as %s says", opts.StoreDir, plan.StoreDir(i), PlanFile)
	}
	if opts.SystemAccount != SystemAccount {
		add("system_account is %q, not %q (the coordinators kick revoked connections through it)", opts.SystemAccount, SystemAccount)
	}

	// No way in but the callout.
	if opts.NoAuthUser != "" {
		add("no_auth_user %q lets a connection in without credentials", opts.NoAuthUser)
	}
	if opts.Username != "" || opts.Authorization != "" || len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0 {
		add("has a server-wide user, token or operator: Gastown's configs have none")
	}
	if opts.LeafNode.Port != 0 || opts.Websocket.Port != 0 || opts.MQTT.Port != 0 || opts.Gateway.Port != 0 {
		add("opens a leafnode, websocket, MQTT or gateway port: their connections are not checked here (leafnodes bypass the callout)")
	}
	accounts := map[string]bool{}
	for _, a := range opts.Accounts {
		accounts[a.Name] = true
	}
	for _, a := range []string{bus.ControlAccount, StateAccount, bus.OpsAccount, AuthAccount, SystemAccount} {
		if !accounts[a] {
			add("account %s is missing", a)
		}
	}
	wantNkeys := map[string]struct {
		account string
		perms   *server.Permissions
	}{
		keys.Control: {bus.ControlAccount, bus.CoordinatorPermissions()},
		keys.State:   {StateAccount, bus.StatePermissions()},
		keys.OpsCopy: {bus.OpsAccount, nil},
		keys.Auth:    {AuthAccount, nil},
		keys.System:  {SystemAccount, nil},
		plan.OpsKey:  {bus.OpsAccount, bus.OpsPermissions()},
	}
	found := map[string]bool{}
	for _, u := range opts.Nkeys {
		acc := accountName(u.Account)
		w, ok := wantNkeys[u.Nkey]
		switch {
		case !ok && acc == bus.ControlAccount:
			add("account %s has a user %s besides the coordinator's: only the callout may grant container or admin permissions", bus.ControlAccount, u.Nkey)
		case !ok:
			add("account %s has a user %s that is not one of the coordinator's keys nor the ops key", acc, u.Nkey)
		case acc != w.account:
			add("the key %s is in account %s, not %s", u.Nkey, acc, w.account)
		case w.perms != nil && !samePerms(u.Permissions, w.perms):
			add("the permissions of %s in %s are not the ones this gastown generates", u.Nkey, acc)
		}
		found[u.Nkey] = true
	}
	for k, w := range wantNkeys {
		switch {
		case found[k]:
		case k == plan.OpsKey:
			add("the break-glass ops key %s (%s) is not a user of account %s: with no coordinator running, operators could not get in", k, OpsKeyFile, w.account)
		default:
			add("the coordinator's key %s is not a user of account %s", k, w.account)
		}
	}
	for _, u := range opts.Users {
		acc := accountName(u.Account)
		switch {
		case acc == bus.ControlAccount:
			add("account %s has a user %q besides the coordinator's: only the callout may grant container or admin permissions", bus.ControlAccount, u.Username)
		case acc == bus.OpsAccount:
			add("account %s has a password user %q: the servers would check its password themselves, unthrottled and with a bcrypt hash per guess before any callout; "+
				"remove it (ops's password goes through the coordinators' callout, throttled, and the way in with no coordinator is the nkey in %s)", acc, u.Username, OpsKeyFile)
		default:
			add("account %s has a user %q that Gastown does not make", acc, u.Username)
		}
	}

	out = append(out, checkAuthAccount(path)...)

	// The callout.
	ac := opts.AuthCallout
	if ac == nil {
		return append(out, "has no authorization { auth_callout }: no container could connect, or (with other users) the callout would be bypassed")
	}
	if ac.Issuer != keys.Issuer {
		add("auth_callout issuer is %s, not the coordinator's issuer %s: every callout answer would be refused", ac.Issuer, keys.Issuer)
	}
	switch ac.XKey {
	case "":
		add("auth_callout has no xkey: callout requests, which carry container tokens, would cross the cluster in clear")
	case keys.XKey:
	default:
		add("auth_callout xkey is %s, not the coordinator's %s: the coordinators cannot open the requests", ac.XKey, keys.XKey)
	}
	if ac.Account != AuthAccount {
		add("auth_callout account is %q, not %q, where the coordinators answer", ac.Account, AuthAccount)
	}
	if len(ac.AllowedAccounts) > 0 {
		add("auth_callout allowed_accounts %v: users of other accounts would skip the callout", ac.AllowedAccounts)
	}
	for _, u := range keys.CoordinatorUsers() {
		if !slices.Contains(ac.AuthUsers, u) {
			add("auth_users lacks the coordinator's key %s: that connection would be sent to the callout it must answer", u)
		}
	}
	if !slices.Contains(ac.AuthUsers, plan.OpsKey) {
		add("auth_users lacks the break-glass ops key %s: it would be sent to the callout, which refuses it, so no operator could get in with no coordinator running", plan.OpsKey)
	}
	for _, u := range ac.AuthUsers {
		if u != plan.OpsKey && !slices.Contains(keys.CoordinatorUsers(), u) {
			add("auth_users lists %q, which is not one of the coordinator's keys nor the ops key: it would skip the callout (and its throttle)", u)
		}
	}
	if opts.AuthTimeout > 2 {
		add("authorization timeout %v s: above 2 s a callout races the server's first PING", opts.AuthTimeout)
	}
	return out
}

func accountName(a *server.Account) string {
	if a == nil {
		return "$G"
	}
	return a.Name
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// samePerms compares permissions as the server parsed them with the ones
// generated.
func samePerms(got, want *server.Permissions) bool {
	norm := func(p *server.Permissions) *server.Permissions {
		if p == nil {
			return &server.Permissions{}
		}
		c := *p
		for _, sp := range []**server.SubjectPermission{&c.Publish, &c.Subscribe} {
			if *sp != nil {
				n := **sp
				if len(n.Allow) == 0 {
					n.Allow = nil
				}
				if len(n.Deny) == 0 {
					n.Deny = nil
				}
				*sp = &n
			}
		}
		return &c
	}
	return reflect.DeepEqual(norm(got), norm(want))
}
