package cluster

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// OpsUser is the operator's user (password auth, through the callout,
// into bus.OpsAccount).
const OpsUser = "ops"

// opsMaxConsumers bounds the consumers of the ops account, as on the
// embedded server.
const opsMaxConsumers = 64

// opsStreams is how many streams the ops account may hold: one copy per
// state bucket but the leases, as the embedded server's copier keeps.
var opsStreams = len(slices.DeleteFunc(slices.Clone(schemas.StateBuckets), func(b string) bool { return b == schemas.BucketLeases }))

// exported are the control account's subjects the ops account imports.
func exported() []string { return []string{schemas.AllTowns.Heartbeat(), schemas.AllTowns.Events()} }

// Validate says whether every key is set and of its kind.
func (k PublicKeys) Validate() error {
	if !nkeys.IsValidPublicAccountKey(k.Issuer) {
		return errors.Newf("the callout issuer %q is not a public account key (A…)", k.Issuer)
	}
	if !nkeys.IsValidPublicCurveKey(k.XKey) {
		return errors.Newf("the callout xkey %q is not a public curve key (X…)", k.XKey)
	}
	for i, u := range k.CoordinatorUsers() {
		if !nkeys.IsValidPublicUserKey(u) {
			return errors.Newf("coordinator user key %d (%q) is not a public user key (U…)", i+1, u)
		}
	}
	return nil
}

// NodeConfig is the nats-server configuration of node i (from 0).
func (p Plan) NodeConfig(i int, keys PublicKeys) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	if i < 0 || i >= p.Nodes {
		return "", errors.Newf("node %d: the plan has nodes 0 to %d", i, p.Nodes-1)
	}
	if err := keys.Validate(); err != nil {
		return "", err
	}
	if !nkeys.IsValidPublicUserKey(p.OpsKey) {
		return "", errors.Newf("the break-glass ops key %q is not a public user key (U…)", p.OpsKey)
	}
	var w confWriter
	w.comment("nats-server configuration of Gastown cluster node %s, written by 'gastown cluster init'.", NodeName(i))
	w.comment("It holds the route password: keep it mode 0600.")
	w.comment("Check a hand-edited set with 'gastown cluster check --dir <dir>'.")
	w.kv("server_name", q(NodeName(i)))
	w.kv("listen", q(p.ClientAddr(i)))
	if m := p.MonitorAddr(i); m != "" {
		w.comment("HTTP monitoring (/healthz, /varz, /jsz): no authentication, keep it on loopback.")
		w.kv("http", q(m))
	}
	w.open("cluster")
	w.kv("name", q(ClusterName))
	w.kv("listen", q(p.ClusterAddr(i)))
	if p.ClusterAdvertise != nil {
		w.kv("advertise", q(p.ClusterAdvertise[i]))
	}
	w.comment("Routes are authenticated: a server without these credentials cannot join.")
	w.open("authorization")
	w.kv("user", q(p.RouteUser))
	w.kv("password", q(p.RoutePassword))
	w.kv("timeout", fmt.Sprint(p.AuthTimeout))
	w.close()
	var routes []string
	for _, r := range p.routes(i) {
		routes = append(routes, q("nats://"+p.RouteUser+":"+p.RoutePassword+"@"+r))
	}
	w.list("routes", routes)
	w.close()
	w.open("jetstream")
	w.kv("store_dir", q(p.StoreDir(i)))
	w.close()
	w.kv("system_account", q(SystemAccount))

	w.open("accounts")
	w.comment("Containers and the administrator land here through the auth callout only;")
	w.comment("the one configured user is the coordinator's control connection. No JetStream.")
	w.open(bus.ControlAccount)
	w.users([]user{{nkey: keys.Control, perms: bus.CoordinatorPermissions()}})
	var exports []string
	for _, s := range exported() {
		exports = append(exports, fmt.Sprintf("{stream: %s, accounts: [%s]}", q(s), q(bus.OpsAccount)))
	}
	w.list("exports", exports)
	w.close()

	w.comment("The state buckets: only the coordinator's state connection.")
	w.open(StateAccount)
	w.kv("jetstream", "enabled")
	w.users([]user{{nkey: keys.State, perms: bus.StatePermissions()}})
	w.close()

	w.comment("The operator's: read-only copies of the state and every town's heartbeats and events.")
	w.comment("ops with its password lands here through the callout (throttled); the nkey user")
	w.comment("is the break-glass way in while no coordinator runs (its seed is D/ops.nk).")
	w.open(bus.OpsAccount)
	w.open("jetstream")
	w.kv("max_memory", "-1")
	w.kv("max_store", "-1")
	w.kv("max_streams", fmt.Sprint(opsStreams))
	w.kv("max_consumers", fmt.Sprint(opsMaxConsumers))
	w.close()
	w.users([]user{{nkey: p.OpsKey, perms: bus.OpsPermissions()}, {nkey: keys.OpsCopy}})
	var imports []string
	for _, s := range exported() {
		imports = append(imports, fmt.Sprintf("{stream: {account: %s, subject: %s}}", q(bus.ControlAccount), q(s)))
	}
	w.list("imports", imports)
	w.close()

	w.comment("Where the servers send auth callout requests; the coordinators answer them.")
	w.open(AuthAccount)
	w.users([]user{{nkey: keys.Auth}})
	w.close()

	w.open(SystemAccount)
	w.users([]user{{nkey: keys.System}})
	w.close()
	w.close() // accounts

	w.comment("Every connection but the users named in auth_users goes through the callout:")
	w.comment("the coordinators verify the container token (or the admin or ops password) and")
	w.comment("sign a user JWT with the issuer key, carrying that identity's permissions.")
	w.open("authorization")
	w.kv("timeout", fmt.Sprint(p.AuthTimeout))
	w.open("auth_callout")
	w.kv("issuer", q(keys.Issuer))
	w.kv("account", q(AuthAccount))
	authUsers := []string{}
	for _, u := range keys.CoordinatorUsers() {
		authUsers = append(authUsers, q(u))
	}
	authUsers = append(authUsers, q(p.OpsKey))
	w.list("auth_users", authUsers)
	w.kv("xkey", q(keys.XKey))
	w.close()
	w.close()
	return w.String(), nil
}

// WriteNodeConfigs writes dir/node-<i+1>.conf for every node, mode 0600,
// refusing to overwrite any.
func (p Plan) WriteNodeConfigs(dir string, keys PublicKeys) error {
	confs := make([]string, p.Nodes)
	for i := range confs {
		c, err := p.NodeConfig(i, keys)
		if err != nil {
			return err
		}
		confs[i] = c
	}
	for i, c := range confs {
		if err := writeNew(filepath.Join(dir, NodeConfigFile(i)), []byte(c)); err != nil {
			return err
		}
	}
	return nil
}

// user is one entry of an account's users.
type user struct {
	nkey, name, password string
	perms                *server.Permissions
}

// confWriter renders nats-server configuration text.
type confWriter struct {
	b     strings.Builder
	depth int
}

func (w *confWriter) line(s string) {
	w.b.WriteString(strings.Repeat("  ", w.depth))
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}
func (w *confWriter) comment(format string, args ...any) { w.line("# " + fmt.Sprintf(format, args...)) }
func (w *confWriter) kv(k, v string)                     { w.line(k + ": " + v) }
func (w *confWriter) open(k string)                      { w.line(k + " {"); w.depth++ }
func (w *confWriter) close()                             { w.depth--; w.line("}") }
func (w *confWriter) String() string                     { return w.b.String() }

func (w *confWriter) list(k string, items []string) {
	if len(items) == 0 {
		w.kv(k, "[]")
		return
	}
	w.line(k + ": [")
	w.depth++
	for _, it := range items {
		w.line(it)
	}
	w.depth--
	w.line("]")
}

func (w *confWriter) users(us []user) {
	w.line("users: [")
	w.depth++
	for _, u := range us {
		w.line("{")
		w.depth++
		if u.nkey != "" {
			w.kv("nkey", q(u.nkey))
		} else {
			w.kv("user", q(u.name))
			w.kv("password", q(u.password))
		}
		if u.perms != nil {
			w.permissions(u.perms)
		}
		w.depth--
		w.line("}")
	}
	w.depth--
	w.line("]")
}

// permissions renders p as the config's permissions block.
func (w *confWriter) permissions(p *server.Permissions) {
	w.open("permissions")
	for _, sp := range []struct {
		name string
		p    *server.SubjectPermission
	}{{"publish", p.Publish}, {"subscribe", p.Subscribe}} {
		if sp.p == nil {
			continue
		}
		w.open(sp.name)
		if sp.p.Allow != nil {
			w.list("allow", quoteAll(sp.p.Allow))
		}
		if sp.p.Deny != nil {
			w.list("deny", quoteAll(sp.p.Deny))
		}
		w.close()
	}
	if p.Response != nil {
		w.open("allow_responses")
		w.kv("max", fmt.Sprint(p.Response.MaxMsgs))
		if p.Response.Expires > 0 {
			w.kv("expires", q(p.Response.Expires.String()))
		}
		w.close()
	}
	w.close()
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = q(s)
	}
	return out
}

// q quotes s for the config. Every string rendered is checked (Validate,
// nkeys, bus's subjects) to hold no quote, backslash or control character.
func q(s string) string { return `"` + s + `"` }
