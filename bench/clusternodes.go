package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gastown/gastown/bus/cluster"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// benchCluster is a 3-node Gastown NATS cluster made the way `gastown
// cluster init` makes one (cluster.NewPlan, cluster.NewCreds,
// Plan.WriteNodeConfigs) in a temporary directory, run either as
// in-process servers (server.ProcessConfigFile + server.NewServer, so the
// process's CPU time covers the servers too) or as real nats-server
// processes (so a node can be SIGKILLed).
type benchCluster struct {
	dir   string
	plan  cluster.Plan
	creds *cluster.Creds
	confs []string
	bin   string // nats-server binary of a real-process cluster

	mu      sync.Mutex
	servers []*server.Server // in-process nodes
	procs   []*nodeProcess   // real-process nodes
}

// nodeProcess is one nats-server child in its own process group.
type nodeProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// clusterNodes is the size of the bench's clusters: the issue's.
const clusterNodes = 3

// newBenchCluster makes a 3-node cluster's directory with cluster.Init
// (the plan, the coordinator's credentials, the node configs: what
// `gastown cluster init` writes) on a free block of loopback ports.
func newBenchCluster() (*benchCluster, error) {
	dir, err := os.MkdirTemp("", "gastown-bench-cluster-*")
	if err != nil {
		return nil, err
	}
	c := &benchCluster{dir: dir}
	fail := func(err error) (*benchCluster, error) { c.close(); return nil, err }
	base, err := freePortBlock(3 * clusterNodes)
	if err != nil {
		return fail(err)
	}
	plan, err := cluster.NewPlan(filepath.Join(dir, "data"))
	if err != nil {
		return fail(err)
	}
	plan.Nodes, plan.ClientBase, plan.ClusterBase, plan.MonitorBase = clusterNodes, base, base+clusterNodes, 0
	if c.plan, c.creds, err = cluster.Init(dir, plan); err != nil {
		return fail(err)
	}
	for i := range plan.Nodes {
		c.confs = append(c.confs, filepath.Join(dir, cluster.NodeConfigFile(i)))
	}
	return c, nil
}

// startInProcessCluster starts a cluster of in-process servers and waits
// until its state account can use JetStream.
func startInProcessCluster(ctx context.Context) (*benchCluster, error) {
	c, err := newBenchCluster()
	if err != nil {
		return nil, err
	}
	for i := range c.confs {
		opts, err := server.ProcessConfigFile(c.confs[i])
		if err != nil {
			c.close()
			return nil, fmt.Errorf("node %d's config: %w", i+1, err)
		}
		opts.NoSigs, opts.NoLog = true, true
		s, err := server.NewServer(opts)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		s.Start()
		c.servers = append(c.servers, s)
	}
	for i, s := range c.servers {
		if !s.ReadyForConnections(30 * time.Second) {
			c.close()
			return nil, fmt.Errorf("node %d did not accept connections", i+1)
		}
	}
	if err := c.waitJetStream(ctx); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// startProcessCluster starts a cluster of nats-server processes (bin) and
// waits until its state account can use JetStream. Each node logs to
// node-<i>.log in the cluster's directory.
func startProcessCluster(ctx context.Context, bin string) (*benchCluster, error) {
	c, err := newBenchCluster()
	if err != nil {
		return nil, err
	}
	c.bin = bin
	c.procs = make([]*nodeProcess, len(c.confs))
	for i := range c.confs {
		if err := c.startProcess(i); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := c.waitJetStream(ctx); err != nil {
		c.close()
		return nil, fmt.Errorf("%w%s", err, c.logTails())
	}
	return c, nil
}

func (c *benchCluster) startProcess(i int) error {
	log, err := os.OpenFile(filepath.Join(c.dir, "node-"+strconv.Itoa(i+1)+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "-c", c.confs[i])
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("starting %s for node %d: %w", c.bin, i+1, err)
	}
	p := &nodeProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[i] = p
	c.mu.Unlock()
	return nil
}

// signal sends sig to node i's process group and waits until it is gone.
func (p *nodeProcess) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	<-p.done
}

// kill SIGKILLs node i (real processes only) and waits until it is gone.
func (c *benchCluster) kill(i int) {
	c.mu.Lock()
	p := c.procs[i]
	c.mu.Unlock()
	p.signal(syscall.SIGKILL)
}

// restart starts node i's process again after kill.
func (c *benchCluster) restart(i int) error { return c.startProcess(i) }

// close stops every node, in reverse, and removes the directory.
func (c *benchCluster) close() {
	for i := len(c.servers) - 1; i >= 0; i-- {
		c.servers[i].Shutdown()
		c.servers[i].WaitForShutdown()
	}
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i] != nil {
			procs[i].signal(syscall.SIGTERM)
		}
	}
	_ = os.RemoveAll(c.dir)
}

// url is node i's client URL; urls is every node's, comma-separated.
func (c *benchCluster) url(i int) string { return c.plan.ClientURLs()[i] }
func (c *benchCluster) urls() string     { return strings.Join(c.plan.ClientURLs(), ",") }

// dial connects to urls (comma-separated) as one of the coordinator's
// nkey users (which bypass the callout), with the coordinator's inbox
// prefix, to those servers only.
func dial(urls string, kp nkeys.KeyPair, opts ...nats.Option) (*nats.Conn, error) {
	return cluster.Dial(strings.Split(urls, ","), kp, append([]nats.Option{nats.IgnoreDiscoveredServers()}, opts...)...)
}

// waitJetStream waits until every node answers, all follow the same
// JetStream meta leader, and the state account can use JetStream.
func (c *benchCluster) waitJetStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return cluster.WaitReady(ctx, c.plan.ClientURLs(), c.creds, len(c.confs))
}

// logTails is the end of every node's log, for a failure message.
func (c *benchCluster) logTails() string {
	var b strings.Builder
	for i := range c.confs {
		raw, err := os.ReadFile(filepath.Join(c.dir, "node-"+strconv.Itoa(i+1)+".log"))
		if err != nil {
			continue
		}
		if len(raw) > 2000 {
			raw = raw[len(raw)-2000:]
		}
		fmt.Fprintf(&b, "\n--- %s (end) ---\n%s", cluster.NodeName(i), raw)
	}
	return b.String()
}

// freePortBlock returns base, where base..base+n-1 were all free on
// 127.0.0.1 a moment ago, below the ephemeral range (32768–60999) that
// listen-0 and outgoing connections draw from.
func freePortBlock(n int) (int, error) {
	for range 200 {
		base := 10000 + rand.IntN(22000/n)*n
		var ls []net.Listener
		free := true
		for p := base; p < base+n && free; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				free = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			_ = l.Close()
		}
		if free {
			return base, nil
		}
	}
	return 0, errors.New("found no block of free loopback ports in 10000–32000")
}

// natsServerBinary finds the nats-server binary: $GASTOWN_NATS_SERVER,
// else flagPath (bin/nats-server by default, relative to the working
// directory). It returns "" when there is none.
func natsServerBinary(flagPath string) string {
	for _, p := range []string{os.Getenv("GASTOWN_NATS_SERVER"), flagPath} {
		if p == "" {
			continue
		}
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p
		}
	}
	return ""
}
