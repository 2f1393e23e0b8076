package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cockroachdb/errors"
)

// Defaults of a Plan.
const (
	DefaultNodes       = 3
	DefaultHost        = "127.0.0.1"
	DefaultClientBase  = 4222
	DefaultClusterBase = 6222
	DefaultMonitorBase = 8222
	// DefaultAuthTimeout is the servers' authorization timeout in seconds,
	// which is also how long a callout may take. Keep it at most 2: the
	// server's first PING to a client comes at 2 s.
	DefaultAuthTimeout = 2
	// ClusterName is the name of every node's cluster.
	ClusterName = "gastown"
	// PlanFile is the plan's file name in a cluster directory.
	PlanFile = "cluster.json"
)

// Plan is the shape of a cluster: how many nodes, where they listen and
// store, and the secret the nodes share (the route credentials). `gastown cluster init` writes it as D/cluster.json
// (mode 0600: it holds the route password); check and up read it.
type Plan struct {
	// Nodes is the number of nodes (default 3; JetStream needs a majority
	// of them up to write).
	Nodes int `json:"nodes"`
	// Host is the address every node listens on (default 127.0.0.1).
	Host string `json:"host"`
	// ClientBase, ClusterBase: node i (from 0) listens for clients on
	// ClientBase+i and for routes on ClusterBase+i (defaults 4222, 6222).
	ClientBase  int `json:"clientBase"`
	ClusterBase int `json:"clusterBase"`
	// MonitorBase: node i serves HTTP monitoring on MonitorBase+i; 0 means
	// no monitoring port. It has no authentication: keep Host on loopback.
	MonitorBase int `json:"monitorBase"`
	// DataDir: node i stores JetStream under DataDir/node-<i+1>.
	DataDir string `json:"dataDir"`
	// RouteUser and RoutePassword authenticate routes between the nodes.
	RouteUser     string `json:"routeUser"`
	RoutePassword string `json:"routePassword"`
	// AuthTimeout is the authorization timeout in seconds, and so the
	// callout's deadline (default 2).
	AuthTimeout int `json:"authTimeout"`
	// RouteURLs, when set, are for each node the host:port addresses it
	// dials its routes on, instead of the other nodes' cluster ports
	// (tests route through proxies to cut links).
	RouteURLs [][]string `json:"routeURLs,omitempty"`
	// ClusterAdvertise, when set, is for each node the host:port it
	// advertises to the other nodes for routes.
	ClusterAdvertise []string `json:"clusterAdvertise,omitempty"`
	// Keys are the public halves of the coordinator's credentials, which
	// the node configs name: check verifies the configs against them
	// without the seeds.
	Keys PublicKeys `json:"keys"`
	// OpsKey is the public key of the break-glass ops user, an nkey the
	// servers check themselves (auth_users), so that operators can
	// inspect the cluster while no coordinator runs; init writes its
	// seed to D/ops.nk. (The ops password goes through the callout.)
	OpsKey string `json:"opsKey"`
}

// NewPlan is a plan with the defaults, its data under dataDir, and fresh
// route credentials.
func NewPlan(dataDir string) (Plan, error) {
	pw, err := randomHex(24)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{
		Nodes: DefaultNodes, Host: DefaultHost,
		ClientBase: DefaultClientBase, ClusterBase: DefaultClusterBase, MonitorBase: DefaultMonitorBase,
		DataDir: dataDir, RouteUser: "gastown-route", RoutePassword: pw, AuthTimeout: DefaultAuthTimeout,
	}
	return p, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", errors.Wrap(err, "reading random bytes")
	}
	return hex.EncodeToString(b), nil
}

// Validate says what is wrong with the plan, if anything.
func (p Plan) Validate() error {
	if p.Nodes < 2 {
		// nats-server refuses a JetStream cluster without routes.
		return errors.WithHint(errors.Newf("a cluster needs at least 2 nodes, not %d", p.Nodes),
			"on one machine, run `gastown coordinator` on its embedded server; a cluster that survives a node's loss needs 3 nodes")
	}
	if p.Host == "" || !safe(p.Host) {
		return errors.Newf("host %q is not a host name or address", p.Host)
	}
	for _, b := range []struct {
		name string
		base int
		zero bool
	}{{"client base port", p.ClientBase, false}, {"cluster base port", p.ClusterBase, false}, {"monitor base port", p.MonitorBase, true}} {
		if b.zero && b.base == 0 {
			continue
		}
		if b.base < 1 || b.base+p.Nodes-1 > 65535 {
			return errors.Newf("%s %d: the ports %d to %d must lie in 1..65535", b.name, b.base, b.base, b.base+p.Nodes-1)
		}
	}
	overlap := func(a, b int) bool { return a != 0 && b != 0 && a < b+p.Nodes && b < a+p.Nodes }
	if overlap(p.ClientBase, p.ClusterBase) || overlap(p.ClientBase, p.MonitorBase) || overlap(p.ClusterBase, p.MonitorBase) {
		return errors.Newf("the client (%d), cluster (%d) and monitor (%d) port ranges of %d nodes overlap", p.ClientBase, p.ClusterBase, p.MonitorBase, p.Nodes)
	}
	if p.DataDir == "" || !safe(p.DataDir) {
		return errors.Newf("data directory %q must be set, without quotes, backslashes or control characters", p.DataDir)
	}
	if p.RouteUser == "" || p.RoutePassword == "" || !urlSafe(p.RouteUser) || !urlSafe(p.RoutePassword) {
		return errors.New("the route user and password must be set, of letters, digits, '-' and '_' only")
	}
	if p.AuthTimeout < 1 || p.AuthTimeout > 2 {
		return errors.Newf("auth timeout %d s: use 1 or 2 (a longer callout meets the server's first PING at 2 s)", p.AuthTimeout)
	}
	if p.RouteURLs != nil && len(p.RouteURLs) != p.Nodes {
		return errors.Newf("route addresses are given for %d nodes, not %d", len(p.RouteURLs), p.Nodes)
	}
	for _, rs := range p.RouteURLs {
		for _, r := range rs {
			if _, _, err := net.SplitHostPort(r); err != nil || !safe(r) {
				return errors.Newf("route address %q is not host:port", r)
			}
		}
	}
	if p.ClusterAdvertise != nil && len(p.ClusterAdvertise) != p.Nodes {
		return errors.Newf("cluster advertise addresses are given for %d nodes, not %d", len(p.ClusterAdvertise), p.Nodes)
	}
	for _, a := range p.ClusterAdvertise {
		if !safe(a) {
			return errors.Newf("cluster advertise address %q is not host:port", a)
		}
	}
	return nil
}

// safe is whether s can go between double quotes in a config as is.
func safe(s string) bool {
	for _, r := range s {
		if r < ' ' || r == '"' || r == '\\' || r == 0x7f {
			return false
		}
	}
	return true
}

func urlSafe(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// addr is host:port on the plan's host.
func (p Plan) addr(port int) string { return net.JoinHostPort(p.Host, strconv.Itoa(port)) }

// ClientURLs are the nodes' client URLs, in node order.
func (p Plan) ClientURLs() []string {
	urls := make([]string, p.Nodes)
	for i := range urls {
		urls[i] = "nats://" + p.addr(p.ClientBase+i)
	}
	return urls
}

// ClientAddr is node i's client host:port.
func (p Plan) ClientAddr(i int) string { return p.addr(p.ClientBase + i) }

// ClusterAddr is node i's route host:port.
func (p Plan) ClusterAddr(i int) string { return p.addr(p.ClusterBase + i) }

// MonitorAddr is node i's monitoring host:port, "" without monitoring.
func (p Plan) MonitorAddr(i int) string {
	if p.MonitorBase == 0 {
		return ""
	}
	return p.addr(p.MonitorBase + i)
}

// NodeName is node i's server name: gastown-<i+1>.
func NodeName(i int) string { return fmt.Sprintf("gastown-%d", i+1) }

// NodeConfigFile is node i's config file name: node-<i+1>.conf.
func NodeConfigFile(i int) string { return fmt.Sprintf("node-%d.conf", i+1) }

// StoreDir is where node i keeps JetStream.
func (p Plan) StoreDir(i int) string { return filepath.Join(p.DataDir, fmt.Sprintf("node-%d", i+1)) }

// routes are the host:port addresses node i dials.
func (p Plan) routes(i int) []string {
	if p.RouteURLs != nil {
		return p.RouteURLs[i]
	}
	var rs []string
	for j := 0; j < p.Nodes; j++ {
		if j != i {
			rs = append(rs, p.ClusterAddr(j))
		}
	}
	return rs
}

// Write writes the plan as dir/cluster.json, mode 0600; it refuses to
// overwrite one.
func (p Plan) Write(dir string) error {
	if err := p.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encoding the cluster plan")
	}
	return writeNew(filepath.Join(dir, PlanFile), append(b, '\n'))
}

// ReadPlan reads dir/cluster.json and validates it.
func ReadPlan(dir string) (Plan, error) {
	path := filepath.Join(dir, PlanFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Plan{}, errors.WithHint(errors.Newf("%s is missing", path), "give the directory 'gastown cluster init --dir' wrote")
	}
	if err != nil {
		return Plan{}, errors.Wrapf(err, "reading %s", path)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return Plan{}, errors.Wrapf(err, "decoding %s", path)
	}
	if err := p.Validate(); err != nil {
		return Plan{}, errors.Wrapf(err, "%s", path)
	}
	return p, nil
}

// writeNew writes a new file of mode 0600, refusing to overwrite one.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return errors.Newf("%s already exists: refusing to overwrite it", path)
	}
	if err != nil {
		return errors.Wrapf(err, "creating %s", path)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		return errors.Wrapf(errors.CombineErrors(werr, cerr), "writing %s", path)
	}
	return nil
}
