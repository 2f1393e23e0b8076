package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus/cluster"
)

func runCluster(ctx context.Context, args []string, env Env) error {
	return runSubs(ctx, "cluster", args, env, []sub{
		{"init", "write the node configs and the coordinator's credentials of a new cluster", runClusterInit},
		{"check", "verify a cluster directory: every node grants tokens only through the callout", runClusterCheck},
		{"up", "start a cluster directory's nodes and coordinators here, until Ctrl-C", runClusterUp},
	})
}

const clusterInitUsage = `cluster init --dir D [--nodes 3] [--host 127.0.0.1] [--client-base 4222] [--cluster-base 6222] [--monitor-base 8222]`

const clusterInitDesc = `
Writes, into the new directory D (it must not exist, or be empty):

  D/cluster.json     the plan: nodes, ports, the route password, the public
                     keys of the coordinator's credentials (mode 0600)
  D/node-<i>.conf    the nats-server config of node i (mode 0600): client
                     port client-base+i-1, routes on cluster-base+i-1 to every
                     other node (authenticated), JetStream under D/data/node-<i>,
                     the accounts of Gastown's isolation model and the auth
                     callout that the coordinators answer
  D/coordinator/     the coordinator's nkey seeds and callout xkey (0700, 0600):
                     give it to every coordinator with --cluster-creds
  D/ops.nk           the break-glass ops key (0600): the read-only 'ops'
                     identity as an nkey the nodes check themselves, for
                     when no coordinator runs ('gastown ops context --nkey')

No node can grant a container token without the callout: the control account
GASTOWN has no user but the coordinator's own key. The 'ops' password is no
part of the configs: the coordinators check it (GASTOWN_OPS_PASSWORD, the same
on every one), through the callout, throttled like admin's. Then prints the
commands that start each node and each coordinator.`

func runClusterInit(_ context.Context, args []string, env Env) error {
	fs := newFlags("cluster init", clusterInitUsage, clusterInitDesc, env)
	dir := fs.String("dir", "", "the new cluster directory (required)")
	nodes := fs.Int("nodes", cluster.DefaultNodes, "number of nodes (JetStream writes need a majority of them up)")
	host := fs.String("host", cluster.DefaultHost, "address every node listens on")
	clientBase := fs.Int("client-base", cluster.DefaultClientBase, "client port of node 1; node i listens on client-base+i-1")
	clusterBase := fs.Int("cluster-base", cluster.DefaultClusterBase, "route port of node 1; node i listens on cluster-base+i-1")
	monitorBase := fs.Int("monitor-base", cluster.DefaultMonitorBase, "HTTP monitoring port of node 1 (no authentication: loopback only); 0 turns monitoring off")
	if done, err := parse(fs, args, env); done {
		return err
	}
	if *dir == "" {
		return errors.Mark(errors.WithHint(errors.New("cluster init needs --dir"), "e.g. gastown cluster init --dir ./cluster"), ErrUsage)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return errors.Wrapf(err, "resolving %s", *dir)
	}
	plan, err := cluster.NewPlan(filepath.Join(abs, "data"))
	if err != nil {
		return err
	}
	plan.Nodes, plan.Host, plan.ClientBase, plan.ClusterBase, plan.MonitorBase = *nodes, *host, *clientBase, *clusterBase, *monitorBase
	if err := plan.Validate(); err != nil {
		return errors.Mark(err, ErrUsage)
	}
	plan, _, err = cluster.Init(abs, plan)
	if err != nil {
		return err
	}
	printClusterCommands(env, *dir, plan)
	return nil
}

// printClusterCommands says what init wrote and how to start it all.
func printClusterCommands(env Env, dir string, plan cluster.Plan) {
	w := env.Stdout
	fmt.Fprintf(w, "Wrote a %d-node cluster into %s (configs node-1.conf … node-%d.conf, credentials in %s).\n",
		plan.Nodes, dir, plan.Nodes, filepath.Join(dir, cluster.CredsDir))
	fmt.Fprintln(w, "The read-only 'ops' identity: its password is the coordinators' GASTOWN_OPS_PASSWORD (checked through")
	fmt.Fprintf(w, "the callout, throttled); with no coordinator running, the break-glass key %s:\n", filepath.Join(dir, cluster.OpsKeyFile))
	fmt.Fprintf(w, "  gastown ops context --nkey %s --server %s\n", filepath.Join(dir, cluster.OpsKeyFile), strings.Join(plan.ClientURLs(), ","))
	fmt.Fprintf(w, "\nAll at once on this machine:\n\n  gastown cluster up --dir %s\n", dir)
	fmt.Fprintln(w, "\nOr by hand: start each node (nats-server v2.15.2; 'make nats-server' builds bin/nats-server):")
	fmt.Fprintln(w)
	for i := range plan.Nodes {
		fmt.Fprintf(w, "  nats-server -c %s\n", filepath.Join(dir, cluster.NodeConfigFile(i)))
	}
	fmt.Fprintln(w, "\nthen two or more coordinators, anywhere that reaches the nodes, each with the same secret")
	fmt.Fprintln(w, "and its own metrics port (on a cluster a coordinator keeps nothing on disk: no --data-dir):")
	fmt.Fprintln(w)
	for n := range 2 {
		fmt.Fprintf(w, "  GASTOWN_JWT_SECRET=… %s\n", strings.Join(coordinatorArgs("gastown", plan, filepath.Join(dir, cluster.CredsDir), metricsAddr(defaultMetricsBase, n)), " "))
	}
	fmt.Fprintln(w, "\n(and GASTOWN_ADMIN_PASSWORD, GASTOWN_OPS_PASSWORD as for any coordinator). Containers connect to")
	fmt.Fprintf(w, "any node with their token: GASTOWN_NATS_URL=%s\n", strings.Join(plan.ClientURLs(), ","))
}

// defaultMetricsBase is the metrics port of the first coordinator 'up'
// starts; the n-th (from 0) gets defaultMetricsBase+n.
const defaultMetricsBase = 9464

func metricsAddr(base, n int) string { return "127.0.0.1:" + strconv.Itoa(base+n) }

// replicas is the state buckets' replica count on plan's cluster.
func replicas(plan cluster.Plan) int { return min(3, plan.Nodes) }

// coordinatorArgs is the command line of a coordinator on plan's cluster.
func coordinatorArgs(bin string, plan cluster.Plan, credsDir, metrics string) []string {
	return []string{bin, "coordinator",
		"--nats-url", strings.Join(plan.ClientURLs(), ","),
		"--cluster-creds", credsDir,
		"--replicas", strconv.Itoa(replicas(plan)),
		"--metrics-listen", metrics,
	}
}

const clusterCheckUsage = `cluster check --dir D`

const clusterCheckDesc = `
Verifies a cluster directory written by 'gastown cluster init' and perhaps
edited since: every node config parses and is the node cluster.json plans
(listen, routes to every other node, their credentials); it has the accounts
of the isolation model with only the coordinator's users (no other user in
GASTOWN: nothing grants container permissions but the callout); its
auth_callout names the coordinator's issuer and xkey, the account
GASTOWN_AUTH (with nothing but its users) and every coordinator key in
auth_users; no password user grants ops (ops's password goes through the
callout), and the break-glass ops nkey is in GASTOWN_OPS with exactly ops's
permissions and in auth_users; and the credentials in D/coordinator and
D/ops.nk are the ones the configs name. Prints each problem and exits 1 when
there is any.`

func runClusterCheck(_ context.Context, args []string, env Env) error {
	fs := newFlags("cluster check", clusterCheckUsage, clusterCheckDesc, env)
	dir := fs.String("dir", "", "the cluster directory (required)")
	if done, err := parse(fs, args, env); done {
		return err
	}
	if *dir == "" {
		return errors.Mark(errors.New("cluster check needs --dir"), ErrUsage)
	}
	return checkClusterDir(env, env.Stdout, *dir)
}

// checkClusterDir prints every problem of dir on stderr, and fails when
// there is one; else it says ok on okTo.
func checkClusterDir(env Env, okTo io.Writer, dir string) error {
	problems := cluster.Check(dir)
	if len(problems) == 0 {
		fmt.Fprintf(okTo, "%s: ok\n", dir)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintf(env.Stderr, "problem: %s\n", p)
	}
	return errors.WithHint(errors.Newf("%s has %d problem(s)", dir, len(problems)),
		"fix them, or make a new directory with 'gastown cluster init'")
}
