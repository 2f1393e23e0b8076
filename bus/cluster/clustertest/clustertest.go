package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// Options shape a test cluster.
type Options struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Partitionable routes every link between two nodes through a
	// loopback proxy, so that Cut and Heal can partition a node.
	Partitionable bool
	// Monitor gives every node an HTTP monitoring port (Plan.MonitorAddr).
	Monitor bool
	// Plan, when set, adjusts the plan before the configs are written.
	Plan func(*cluster.Plan)
	// Later are nodes Start leaves unstarted (real processes only):
	// Restart starts them. The others must be a JetStream quorum.
	Later []int
}

// Cluster is a running test cluster.
type Cluster struct {
	t       testing.TB
	dir     string
	plan    cluster.Plan
	creds   *cluster.Creds
	confs   []string
	proxies *proxies
	bin     string // the nats-server binary of a real-process cluster

	mu    sync.Mutex
	nodes []node
}

// node is one server: a process, or an in-process server.
type node interface {
	stop(graceful bool)
	running() bool
}

// Dir is the cluster's directory: cluster.json, node-<i>.conf and
// coordinator/ (the credentials), as 'gastown cluster init' writes them.
func (c *Cluster) Dir() string { return c.dir }

// CredsDir is the coordinator's credentials directory (--cluster-creds).
func (c *Cluster) CredsDir() string { return filepath.Join(c.dir, "coordinator") }

// Creds are the coordinator's keys.
func (c *Cluster) Creds() *cluster.Creds { return c.creds }

// Plan is the cluster's plan.
func (c *Cluster) Plan() cluster.Plan { return c.plan }

// URLs are the nodes' client URLs, in node order.
func (c *Cluster) URLs() []string { return c.plan.ClientURLs() }

// URL is every node's client URL, comma-separated (--nats-url).
func (c *Cluster) URL() string { return strings.Join(c.URLs(), ",") }

// ConfigFile is node i's config file.
func (c *Cluster) ConfigFile(i int) string { return c.confs[i] }

// prepare writes the plan, the credentials and the configs into a
// t.TempDir.
func prepare(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	dir := t.TempDir()
	base := FreePortBlock(t)
	plan, err := cluster.NewPlan(filepath.Join(dir, "data"))
	require.NoError(t, err)
	plan.Nodes = o.Nodes
	plan.ClientBase, plan.ClusterBase, plan.MonitorBase = base, base+16, 0
	if o.Monitor {
		plan.MonitorBase = base + 32
	}
	c := &Cluster{t: t, dir: dir}
	if o.Partitionable {
		c.proxies = newProxies(t, plan, base+48)
		plan.RouteURLs, plan.ClusterAdvertise = c.proxies.routeURLs, c.proxies.advertise
	}
	if o.Plan != nil {
		o.Plan(&plan)
	}
	plan, creds, err := cluster.Init(dir, plan)
	require.NoError(t, err)
	c.plan, c.creds = plan, creds
	for i := range plan.Nodes {
		c.confs = append(c.confs, filepath.Join(dir, cluster.NodeConfigFile(i)))
	}
	c.nodes = make([]node, plan.Nodes)
	return c
}

// StartInProcess starts the cluster as in-process servers and waits until
// JetStream has a meta leader. Kill is not available; Stop and Restart are.
//
// Under -race, nats-server v2.15.2's own code races on an R3 stream's
// first compare-and-set write (a leader's batchStagedDiff.commit sets
// expectedPerSubjectSequence while applyStreamMsgOp reads it unlocked),
// and the race detector fails the test for it. Tests whose cluster keeps
// Gastown's state (KV creates and updates) use Start; this is for what
// needs the servers themselves (their options) and for benchmarks.
func StartInProcess(t testing.TB, o Options) *Cluster {
	t.Helper()
	c := prepare(t, o)
	t.Cleanup(c.shutdown)
	for i := range c.nodes {
		c.nodes[i] = c.startInProcess(i)
	}
	c.WaitReady()
	return c
}

type inProcess struct{ s *server.Server }

func (n *inProcess) stop(bool) {
	n.s.Shutdown()
	n.s.WaitForShutdown()
}
func (n *inProcess) running() bool { return n.s.Running() }

func (c *Cluster) startInProcess(i int) *inProcess {
	c.t.Helper()
	opts, err := server.ProcessConfigFile(c.confs[i])
	require.NoError(c.t, err, "node %d's config", i+1)
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	require.NoError(c.t, err, "node %d", i+1)
	s.Start()
	require.True(c.t, s.ReadyForConnections(30*time.Second), "node %d did not accept connections", i+1)
	return &inProcess{s: s}
}

// Server is node i's in-process server (StartInProcess only).
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[i].(*inProcess)
	require.True(c.t, ok, "node %d is not an in-process server", i+1)
	return n.s
}

// shutdown stops every node, in reverse.
func (c *Cluster) shutdown() {
	c.mu.Lock()
	nodes := append([]node(nil), c.nodes...)
	c.mu.Unlock()
	for i := len(nodes) - 1; i >= 0; i-- {
		if nodes[i] != nil {
			nodes[i].stop(false)
		}
	}
	if c.proxies != nil {
		c.proxies.close()
	}
}

// Stop stops node i gracefully and waits until it has.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	n.stop(true)
}

// Restart starts node i again (after Stop or Kill) from its config, and
// waits until it accepts connections.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	old := c.nodes[i]
	c.mu.Unlock()
	require.False(c.t, old.running(), "node %d is still running: Stop or Kill it first", i+1)
	var n node
	switch old.(type) {
	case *inProcess:
		n = c.startInProcess(i)
	default:
		n = c.startProcess(i)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
}

// Connect opens a connection to the nodes with an nkey of the creds (one
// of c.Creds()'s users), with the coordinator's inbox prefix; closed at
// cleanup.
func (c *Cluster) Connect(kp nkeys.KeyPair, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	nc, err := cluster.Dial(c.URLs(), kp, opts...)
	require.NoError(c.t, err)
	c.t.Cleanup(nc.Close)
	return nc
}

// Connz is node i's CONNZ, asked through the system account on node i
// itself: it works on both kinds of node, and on a node cut off from the
// others.
func (c *Cluster) Connz(i int, opts server.ConnzOptions) (*server.Connz, error) {
	var out server.Connz
	return &out, c.monitor(i, "CONNZ", server.ConnzEventOptions{ConnzOptions: opts}, &out)
}

// Jsz is node i's JSZ, asked as Connz is.
func (c *Cluster) Jsz(i int, opts server.JSzOptions) (*server.JSInfo, error) {
	var out server.JSInfo
	return &out, c.monitor(i, "JSZ", server.JszEventOptions{JSzOptions: opts}, &out)
}

// monitor asks node i's monitoring endpoint kind with req (whose event
// filter it sets to node i) and decodes the answer's data into out.
func (c *Cluster) monitor(i int, kind string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var filter map[string]any
	if err := json.Unmarshal(body, &filter); err != nil {
		return err
	}
	filter["server_name"], filter["exact_match"] = cluster.NodeName(i), true
	if body, err = json.Marshal(filter); err != nil {
		return err
	}
	nc, err := cluster.Dial(c.URLs()[i:i+1], c.creds.System, nats.IgnoreDiscoveredServers(), nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	m, err := nc.Request("$SYS.REQ.SERVER.PING."+kind, body, 5*time.Second)
	if err != nil {
		return errors.Wrapf(err, "asking node %d for %s", i+1, kind)
	}
	var resp struct {
		Data  json.RawMessage  `json:"data"`
		Error *server.ApiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return errors.Wrapf(err, "node %d's %s", i+1, kind)
	}
	if resp.Error != nil {
		return errors.Newf("node %d's %s: %s", i+1, kind, resp.Error.Description)
	}
	return json.Unmarshal(resp.Data, out)
}

// OpsKeyFile is the break-glass ops key's seed file (D/ops.nk).
func (c *Cluster) OpsKeyFile() string { return filepath.Join(c.dir, cluster.OpsKeyFile) }

// OpsKey is the break-glass ops key.
func (c *Cluster) OpsKey() nkeys.KeyPair {
	c.t.Helper()
	kp, err := cluster.LoadOpsKey(c.OpsKeyFile())
	require.NoError(c.t, err)
	return kp
}

// ConnectOpsKey connects as the break-glass ops user (its nkey), with
// the ops inbox prefix; closed at cleanup. The servers admit it
// themselves: no coordinator need run.
func (c *Cluster) ConnectOpsKey(opts ...nats.Option) (*nats.Conn, error) {
	c.t.Helper()
	kp := c.OpsKey()
	pub, err := kp.PublicKey()
	require.NoError(c.t, err)
	all := append([]nats.Option{nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(schemas.OpsInbox)}, opts...)
	nc, err := nats.Connect(c.URL(), all...)
	if err == nil {
		c.t.Cleanup(nc.Close)
	}
	return nc, err
}

// ConnectOps connects as the ops user with its password, which a
// coordinator (the callout) checks.
func (c *Cluster) ConnectOps(password string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.UserInfo(cluster.OpsUser, password), nats.CustomInboxPrefix(schemas.OpsInbox)}, opts...)
	nc, err := nats.Connect(c.URL(), all...)
	if err == nil {
		c.t.Cleanup(nc.Close)
	}
	return nc, err
}

// WaitReady waits until every running node answers the system account
// and reports the same JetStream meta leader, and the state account can
// use JetStream.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.waitReady(ctx)
	require.NoError(c.t, err, "the cluster in %s did not become ready%s", c.dir, c.logTails())
}

func (c *Cluster) waitReady(ctx context.Context) error {
	want := 0
	c.mu.Lock()
	for _, n := range c.nodes {
		if n != nil && n.running() {
			want++
		}
	}
	c.mu.Unlock()
	return cluster.WaitReady(ctx, c.URLs(), c.creds, want)
}

// MetaLeaders is cluster.MetaLeaders: each node's JetStream meta leader.
func MetaLeaders(ctx context.Context, sys *nats.Conn, want int) (map[string]string, error) {
	return cluster.MetaLeaders(ctx, sys, want)
}

// logTails is the end of every node's log, for a failure message.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for i := range c.confs {
		raw, err := os.ReadFile(c.logFile(i))
		if err != nil {
			continue
		}
		if len(raw) > 4000 {
			raw = raw[len(raw)-4000:]
		}
		fmt.Fprintf(&b, "\n--- %s (end) ---\n%s", cluster.NodeName(i), raw)
	}
	return b.String()
}

func (c *Cluster) logFile(i int) string {
	return filepath.Join(c.dir, "node-"+strconv.Itoa(i+1)+".log")
}

// addr is a loopback host:port.
func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
