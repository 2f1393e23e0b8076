package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus/cluster"
)

const clusterUpUsage = `cluster up --dir D [--coordinators 2] [--nats-server PATH] [--metrics-base 9464]`

const clusterUpDesc = `
Starts the cluster of directory D (written by 'gastown cluster init') on
this machine: first 'gastown cluster check', then every node as a
nats-server process (log: D/node-<i>.log), then, once JetStream has a
leader, the coordinators one at a time, each once the one before is ready
(this binary, log: D/coordinator-<n>.log), each
with --nats-url of every node, --cluster-creds D/coordinator, --replicas 3
(fewer on a smaller cluster) and its own --metrics-listen 127.0.0.1:<metrics-base+n-1>.
Once every coordinator's /readyz answers ready it prints one line on stdout:

  cluster ready: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224

On Ctrl-C or SIGTERM it stops the coordinators, then the nodes, and exits 0.
A node or coordinator that exits meanwhile is reported on stderr; the rest
run on.

The coordinators get this process's environment: GASTOWN_JWT_SECRET
(required), GASTOWN_ADMIN_PASSWORD, GASTOWN_OPS_PASSWORD. The nats-server
binary is --nats-server, else nats-server next to this binary (make puts both
in bin/), else nats-server on PATH.`

// upStopWait is how long a child is given to stop on SIGTERM before it
// is killed.
const upStopWait = 30 * time.Second

// upPoll is how often up checks readiness.
const upPoll = 100 * time.Millisecond

// upStartWait bounds how long the nodes and the coordinators may take to
// become ready.
const upStartWait = 2 * time.Minute

// coordinatorEnv are the variables a coordinator 'up' starts reads.
var coordinatorEnv = []string{"GASTOWN_JWT_SECRET", "GASTOWN_JWT_ACCEPT_SECRETS", "GASTOWN_ADMIN_PASSWORD", "GASTOWN_OPS_PASSWORD", "GASTOWN_DEV_SECRET"}

func runClusterUp(ctx context.Context, args []string, env Env) error {
	fs := newFlags("cluster up", clusterUpUsage, clusterUpDesc, env)
	dir := fs.String("dir", "", "the cluster directory (required)")
	coordinators := fs.Int("coordinators", 2, "number of coordinators to start")
	natsServer := fs.String("nats-server", "", "the nats-server binary (default: next to this binary, else on PATH)")
	metricsBase := fs.Int("metrics-base", defaultMetricsBase, "metrics port of the first coordinator; the n-th listens on metrics-base+n-1 (127.0.0.1)")
	coordinatorBin := fs.String("coordinator-bin", "", "the gastown binary the coordinators run (default: this one)")
	if done, err := parse(fs, args, env); done {
		return err
	}
	if *dir == "" {
		return errors.Mark(errors.New("cluster up needs --dir"), ErrUsage)
	}
	if *coordinators < 1 {
		return errors.Mark(errors.Newf("--coordinators %d: start at least 1", *coordinators), ErrUsage)
	}
	if *metricsBase < 1 || *metricsBase+*coordinators-1 > 65535 {
		return errors.Mark(errors.Newf("--metrics-base %d: the ports must lie in 1..65535", *metricsBase), ErrUsage)
	}
	if env.Getenv("GASTOWN_JWT_SECRET") == "" {
		return errors.WithHint(errors.New("GASTOWN_JWT_SECRET is not set: the coordinators need it"),
			"make one with: openssl rand -hex 32 (and give every coordinator of the cluster the same)")
	}
	if err := checkClusterDir(env, env.Stderr, *dir); err != nil {
		return err
	}
	plan, err := cluster.ReadPlan(*dir)
	if err != nil {
		return err
	}
	creds, err := cluster.LoadCreds(filepath.Join(*dir, cluster.CredsDir))
	if err != nil {
		return err
	}
	server, err := findNatsServer(*natsServer)
	if err != nil {
		return err
	}
	bin := *coordinatorBin
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return errors.Wrap(err, "finding this binary for the coordinators")
		}
	}

	u := &upRun{env: env, dir: *dir}
	defer u.stopAll()
	for i := range plan.Nodes {
		path := filepath.Join(*dir, cluster.NodeConfigFile(i))
		if err := u.start(cluster.NodeName(i), filepath.Join(*dir, fmt.Sprintf("node-%d.log", i+1)), &u.nodes, nil, server, "-c", path); err != nil {
			return err
		}
	}
	startCtx, cancel := context.WithTimeout(ctx, upStartWait)
	defer cancel()
	if err := u.wait(startCtx, ctx, func(ctx context.Context) error {
		return cluster.WaitReady(ctx, plan.ClientURLs(), creds, plan.Nodes)
	}); err != nil || ctx.Err() != nil {
		return err
	}
	credsDir, err := filepath.Abs(filepath.Join(*dir, cluster.CredsDir))
	if err != nil {
		return errors.Wrap(err, "resolving the credentials directory")
	}
	childEnv := os.Environ()
	for _, k := range coordinatorEnv {
		if v := env.Getenv(k); v != "" {
			childEnv = append(childEnv, k+"="+v)
		}
	}
	// One at a time, each once the one before is ready: the first makes
	// the state buckets of a new cluster, and a failing start is told
	// apart from the next. (Coordinators started together cope too: a
	// bucket is created first and updated only when it exists, since two
	// racing create-or-update calls of one R3 bucket went unanswered.)
	for n := range *coordinators {
		addr := metricsAddr(*metricsBase, n)
		argv := coordinatorArgs(bin, plan, credsDir, addr)
		name := fmt.Sprintf("coordinator-%d", n+1)
		if err := u.start(name, filepath.Join(*dir, name+".log"), &u.coordinators, childEnv, argv[0], argv[1:]...); err != nil {
			return err
		}
		url := "http://" + addr + "/readyz"
		if err := u.wait(startCtx, ctx, func(ctx context.Context) error { return isReady(ctx, url) }); err != nil || ctx.Err() != nil {
			return err
		}
	}
	fmt.Fprintf(env.Stdout, "cluster ready: %s\n", strings.Join(plan.ClientURLs(), ","))
	<-ctx.Done()
	fmt.Fprintln(env.Stderr, "cluster up: stopping the coordinators, then the nodes")
	return nil
}

// findNatsServer is the nats-server binary: given, else next to this
// binary, else on PATH.
func findNatsServer(given string) (string, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", errors.WithHint(errors.Wrapf(err, "--nats-server %s", given), "give the path of a nats-server v2.15.2 binary ('make nats-server' builds bin/nats-server)")
		}
		return given, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "nats-server")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("nats-server")
	if err != nil {
		return "", errors.WithHint(errors.New("no nats-server binary next to gastown nor on PATH"),
			"run 'make nats-server' (it installs bin/nats-server v2.15.2), or give --nats-server PATH")
	}
	return p, nil
}

// isReady is nil once url answers 200.
func isReady(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return errors.Wrapf(err, "asking %s", url)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.Newf("%s: %s", url, strings.TrimSpace(string(body)))
	}
	return nil
}

// upRun owns the processes 'up' started.
type upRun struct {
	env                 Env
	dir                 string
	mu                  sync.Mutex
	nodes, coordinators []*child
	stopping            bool
}

// child is one process, in its own process group (a Ctrl-C at the
// terminal reaches up alone, which stops them in order).
type child struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (u *upRun) start(name, logPath string, into *[]*child, env []string, bin string, args ...string) error {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return errors.Wrapf(err, "opening the log %s", logPath)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = log, log, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return errors.Wrapf(err, "starting %s (%s)", name, bin)
	}
	c := &child{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	u.mu.Lock()
	*into = append(*into, c)
	u.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		_ = log.Close()
		close(c.done)
		u.mu.Lock()
		stopping := u.stopping
		u.mu.Unlock()
		if !stopping {
			fmt.Fprintf(u.env.Stderr, "cluster up: %s exited (%v); see %s\n", name, c.err, logPath)
		}
	}()
	return nil
}

// exited is a child that has exited, if any.
func (u *upRun) exited() *child {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range append(append([]*child(nil), u.nodes...), u.coordinators...) {
		select {
		case <-c.done:
			return c
		default:
		}
	}
	return nil
}

// wait polls ready until it is nil; a child that exits, startCtx's end
// or a signal (ctx) ends it first.
func (u *upRun) wait(startCtx, ctx context.Context, ready func(context.Context) error) error {
	tick := time.NewTicker(upPoll)
	defer tick.Stop()
	for {
		if c := u.exited(); c != nil {
			return errors.WithHint(errors.Newf("%s exited while the cluster started: %v", c.name, c.err), "see "+c.log)
		}
		try, cancel := context.WithTimeout(startCtx, 5*time.Second)
		err := ready(try)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // stopped while starting: not a failure
		case <-startCtx.Done():
			return errors.WithHint(errors.Wrapf(err, "the cluster was not ready after %v", upStartWait), "see the logs in "+u.dir)
		case <-tick.C:
		}
	}
}

// stopAll stops the coordinators, then the nodes.
func (u *upRun) stopAll() {
	u.mu.Lock()
	u.stopping = true
	coords, nodes := u.coordinators, u.nodes
	u.mu.Unlock()
	stopChildren(coords)
	stopChildren(nodes)
}

// stopChildren sends SIGTERM to each group, and SIGKILL to any still
// there after upStopWait; it returns once all have exited.
func stopChildren(cs []*child) {
	for _, c := range cs {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	}
	timer := time.NewTimer(upStopWait)
	defer timer.Stop()
	for _, c := range cs {
		select {
		case <-c.done:
		case <-timer.C:
			for _, k := range cs {
				_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
			}
			<-c.done
		}
	}
}
