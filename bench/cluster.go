package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The cluster phase runs Gastown on a 3-node NATS cluster made from the
// configs `gastown cluster init` writes (bus/cluster), with two
// coordinators in cluster mode (auth callout, R3 state):
//
//   - authenticated RPC: a container's token connection on node 3, the
//     coordinators on nodes 1 and 2, against plain request/reply across
//     the same route (a responder on node 1, a requester on node 3);
//   - connect cost: a container token through the callout against an nkey
//     user that bypasses it (the coordinator's control key);
//   - rotation of every town with two coordinators holding half the
//     leases each;
//   - failover: a coordinator whose connections close under it (no Close,
//     so its leases are not released), until the other holds its towns;
//     and, on real nats-server processes, the longest KV write stall when
//     the stream leader of a state bucket is SIGKILLed.
//
// The RPC, connect and rotation parts run on in-process servers, so the
// process's CPU time covers the servers as well as the callers and
// coordinators; the node kill needs real processes.

// failoverBucket is the bucket the node-kill measurement writes to: in
// the state account, R3 on file storage, as the coordinator's are.
const failoverBucket = "bench_failover"

// rpcTarget is the target for RPC throughput against plain.
const rpcTarget = 0.8

// benchClusterPhase runs the cluster measurements.
func benchClusterPhase(ctx context.Context, o options) ([]Result, error) {
	bin := natsServerBinary(o.natsServer)
	if bin == "" { // before a minute of the other measurements
		return nil, fmt.Errorf("no nats-server binary at %s (nor $GASTOWN_NATS_SERVER) for the node-kill measurement: run 'make nats-server' (it installs nats-server v2.15.2 into bin/), or pass -nats-server", o.natsServer)
	}
	results, err := clusterInProcess(ctx, o)
	if err != nil {
		return results, err
	}
	rs, err := clusterNodeKill(ctx, o, bin)
	return append(results, rs...), err
}

// clusterSetup is an in-process cluster with the coordinators' issuer and
// the admin password.
type clusterSetup struct {
	bc      *benchCluster
	issuer  *token.Issuer
	adminPW string
}

// startCoordinator starts a coordinator in cluster mode whose NatsURL is
// node alone, so it sits there (it learns of the others only to
// reconnect).
func (s *clusterSetup) startCoordinator(ctx context.Context, node int, leaseTTL time.Duration) (*coordinator.Daemon, error) {
	cfg := coordinator.Config{Logger: discard, DispatchCooldown: time.Hour, Replicas: clusterNodes, LeaseTTL: leaseTTL}
	// As in the rpc phase: the limiter is on the path of every call, but
	// 64 callers as fast as they can are far over any town's rate.
	cfg.Limits.RPCRate = 1e9
	dc := coordinator.DaemonConfig{
		Config:  cfg,
		Bus:     bus.Config{AdminPassword: s.adminPW, Logger: discard},
		NatsURL: s.bc.url(node), Cluster: s.bc.creds,
	}
	if serveMetrics {
		dc.MetricsListen = "127.0.0.1:0"
	}
	d, err := coordinator.StartDaemon(ctx, s.issuer, dc)
	if err != nil {
		return nil, fmt.Errorf("starting the coordinator on node %d: %w", node+1, err)
	}
	return d, nil
}

// adminConn connects as the administrator (through the callout) to node.
func (s *clusterSetup) adminConn(node int) (*nats.Conn, error) {
	return nats.Connect(s.bc.url(node), nats.UserInfo(bus.AdminUser, s.adminPW),
		nats.CustomInboxPrefix(schemas.AdminInbox), nats.Name("bench-admin"), nats.MaxReconnects(-1))
}

func (s *clusterSetup) containerToken(town string) (string, error) {
	tok, _, err := s.issuer.MintContainer(town, "", 8*time.Hour)
	return tok, err
}

// clusterInProcess measures RPC, connect cost, rotation and a coordinator
// kill on an in-process cluster.
func clusterInProcess(ctx context.Context, o options) ([]Result, error) {
	progress("cluster: starting 3 in-process nodes")
	bc, err := startInProcessCluster(ctx)
	if err != nil {
		return nil, err
	}
	defer bc.close()
	key, err := token.NewKey([]byte(newSecret()))
	if err != nil {
		return nil, err
	}
	s := &clusterSetup{bc: bc, issuer: token.NewIssuer(token.NewKeyRing(key), time.Now), adminPW: newSecret()}

	progress("cluster: starting coordinators on nodes 1 and 2")
	a, err := s.startCoordinator(ctx, 0, coordinator.DefaultLeaseTTL)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	b, err := s.startCoordinator(ctx, 1, coordinator.DefaultLeaseTTL)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	// On node 3, where no coordinator is: admin requests reach both
	// through the queue group (a node prefers its own members).
	adm, err := s.adminConn(2)
	if err != nil {
		return nil, fmt.Errorf("connecting as admin: %w", err)
	}
	defer adm.Close()

	var results []Result
	rs, err := clusterRPC(ctx, o, s, adm)
	results = append(results, rs...)
	if err != nil {
		return results, err
	}
	rs, err = clusterConnect(ctx, o, s)
	results = append(results, rs...)
	if err != nil {
		return results, err
	}
	rs, err = clusterRotation(ctx, o, s, adm)
	results = append(results, rs...)
	if err != nil {
		return results, err
	}
	// The coordinator kill runs with short leases: a new pair of
	// coordinators (the leases bucket takes their TTL).
	a.Close()
	b.Close()
	rs, err = clusterCoordinatorKill(ctx, o, s)
	return append(results, rs...), err
}

// clusterRPC measures ping from a container on node 3, answered by the
// town's lease holder (one of the coordinators on nodes 1 and 2), against
// plain request/reply from node 3 to a responder on node 1.
func clusterRPC(ctx context.Context, o options, s *clusterSetup, adm *nats.Conn) ([]Result, error) {
	if err := admin(ctx, adm, schemas.AdminTownCreate, schemas.TownCreate{TownID: rpcTown}, nil); err != nil {
		return nil, fmt.Errorf("creating town: %w", err)
	}
	tok, err := s.containerToken(rpcTown)
	if err != nil {
		return nil, err
	}
	src, err := agentclient.Start(ctx, agentclient.Config{URL: s.bc.url(2), Token: tok, ContainerID: "bench-container", Logger: discard})
	if err != nil {
		return nil, fmt.Errorf("connecting the container to node 3: %w", err)
	}
	defer src.Close()
	client := agentclient.NewClient(src, "", "")
	busSys := system{name: "bus", call: pingCall(client)}

	// Plain request/reply in the callout's account (where nothing else
	// listens but the callout responders, on another subject): the
	// coordinator's auth key bypasses the callout and has no permissions
	// to check. Same subject, headers, body and reply bytes as ping.
	reply, err := schemas.ResultReply(schemas.PingResult{TownID: rpcTown})
	if err != nil {
		return nil, err
	}
	subject, _ := mustTown(rpcTown).RPC(schemas.ToolPing)
	responder, err := dial(s.bc.url(0), s.bc.creds.Auth, nats.Name("bench-plain-responder"))
	if err != nil {
		return nil, err
	}
	defer responder.Close()
	if _, err := responder.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
		return nil, err
	}
	if err := responder.Flush(); err != nil {
		return nil, err
	}
	requester, err := dial(s.bc.url(2), s.bc.creds.Auth, nats.Name("bench-plain-requester"), nats.CustomInboxPrefix(mustTown(rpcTown).Inbox()))
	if err != nil {
		return nil, err
	}
	defer requester.Close()
	plainSys := system{name: "plain", call: plainCall(requester, subject, tok)}
	// A second baseline: two responders in a queue group on nodes 1 and
	// 2, as the two coordinators are on …rpc.<method>, which the bus used
	// alone before the lease holder's subject: what a split over two
	// routes costs.
	queued := subject + ".queued"
	for node := range 2 {
		r, err := dial(s.bc.url(node), s.bc.creds.Auth, nats.Name(fmt.Sprintf("bench-plain-responder-%d", node+1)))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		if _, err := r.QueueSubscribe(queued, "bench", func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
			return nil, err
		}
		if err := r.Flush(); err != nil {
			return nil, err
		}
	}
	plain2Sys := system{name: "plain-2nodes", call: plainCall(requester, queued, tok)}
	// The responders' interest crosses the routes asynchronously.
	for _, sys := range []system{plainSys, plain2Sys} {
		if err := waitFor(ctx, 30*time.Second, func() bool {
			c, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return sys.call(c) == nil
		}); err != nil {
			return nil, fmt.Errorf("%s responder not reachable from node 3: %w", sys.name, err)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, 10*o.duration+5*time.Minute)
	defer cancel()
	var results []Result
	for _, workers := range []int{1, o.concurrency} {
		label := "seq"
		if workers > 1 {
			label = fmt.Sprintf("c%d", workers)
		}
		got, err := interleaved(ctx, o, "cluster rpc "+label, []system{plainSys, busSys, plain2Sys}, workers)
		if err != nil {
			return results, err
		}
		results = append(results, clusterRPCResults(label, workers, got["bus"], got["plain"], got[plain2Sys.name])...)
	}
	if o.clusterProfile != "" {
		// -cpuprofile-system picks bus or plain here too (http: the bus),
		// so that the two profiles can be set side by side.
		sys := busSys
		if o.profileOf == "plain" {
			sys = plainSys
		}
		if err := profileRPC(ctx, options{cpuProfile: o.clusterProfile, concurrency: o.concurrency, duration: o.duration}, sys); err != nil {
			return results, err
		}
	}
	return results, nil
}

// interleaved warms each system up, then gives each o.duration in
// o.rounds slices taken in a rotating order, as the rpc phase does.
func interleaved(ctx context.Context, o options, label string, systems []system, workers int) (map[string]*measurement, error) {
	for _, sys := range systems {
		if m := measure(ctx, sys.call, workers, 300*time.Millisecond); m.calls == 0 {
			return nil, fmt.Errorf("%s %s warm-up: no call succeeded: %v", label, sys.name, m.firstErr)
		}
	}
	got := map[string]*measurement{}
	for _, sys := range systems {
		got[sys.name] = &measurement{}
	}
	slice := o.duration / time.Duration(o.rounds)
	for r := range o.rounds {
		for i := range systems {
			sys := systems[(i+r)%len(systems)]
			progress("%s %s round %d/%d", label, sys.name, r+1, o.rounds)
			got[sys.name].add(measure(ctx, sys.call, workers, slice))
		}
	}
	for name, m := range got {
		slices.Sort(m.lat)
		if m.calls == 0 {
			return nil, fmt.Errorf("%s %s: no call succeeded: %v", label, name, m.firstErr)
		}
	}
	return got, nil
}

func clusterRPCResults(label string, workers int, bus, plain, plain2 *measurement) []Result {
	callers := "1 caller"
	if workers > 1 {
		callers = fmt.Sprintf("%d callers sharing one connection", workers)
	}
	errNote := func(m *measurement) string {
		note := fmt.Sprintf("; the process (3 nodes, 2 coordinators, callers) kept %.2f cores busy", m.cores())
		if m.errors > 0 {
			note += fmt.Sprintf("; %d calls failed (first: %v)", m.errors, m.firstErr)
		}
		return note
	}
	n := func(sys, metric string) string { return "cluster.rpc." + label + "." + sys + "." + metric }
	busTP := Result{Name: n("bus", "throughput"), Value: bus.throughput(), Unit: "req/s",
		Note: fmt.Sprintf("ping through the middleware: the container's token connection on node 3, coordinators on nodes 1 and 2; the tool client sends to the town's lease holder (…holder.rpc.ping), so every request crosses one route both ways to one coordinator, %s, %d calls%s; baseline: plain request/reply across the same route", callers, bus.calls, errNote(bus))}.
		withBaseline(plain.throughput())
	busTP = busTP.judged(fmt.Sprintf(">= %.1fx plain", rpcTarget), *busTP.Ratio >= rpcTarget)
	return []Result{
		{Name: n("plain", "throughput"), Value: plain.throughput(), Unit: "req/s",
			Note: fmt.Sprintf("plain request/reply: requester on node 3, responder (fixed reply, byte for byte ping's) on node 1, both nkey users over TCP, same message and headers, %s, %d calls%s", callers, plain.calls, errNote(plain))},
		{Name: n("plain", "p50"), Value: plain.percentile(0.50), Unit: "µs"},
		{Name: n("plain", "p99"), Value: plain.percentile(0.99), Unit: "µs"},
		{Name: n("plain", "cpu-per-call"), Value: plain.cpuPerCall(), Unit: "µs CPU",
			Note: "process CPU (3 in-process nodes, callers, responder) per call"},
		busTP,
		Result{Name: n("bus", "p50"), Value: bus.percentile(0.50), Unit: "µs"}.withBaseline(plain.percentile(0.50)),
		Result{Name: n("bus", "p99"), Value: bus.percentile(0.99), Unit: "µs"}.withBaseline(plain.percentile(0.99)),
		Result{Name: n("bus", "cpu-per-call"), Value: bus.cpuPerCall(), Unit: "µs CPU",
			Note: fmt.Sprintf("process CPU (3 nodes, 2 coordinators, container) per call; baseline: plain; were the process CPU-bound, bus throughput would be %.2fx plain", plain.cpuPerCall()/bus.cpuPerCall())}.withBaseline(plain.cpuPerCall()),
		{Name: n("plain-2nodes", "throughput"), Value: plain2.throughput(), Unit: "req/s",
			Note: fmt.Sprintf("plain request/reply with the bus's topology: the requester on node 3, two responders in a queue group on nodes 1 and 2, %s, %d calls%s", callers, plain2.calls, errNote(plain2))},
		{Name: n("plain-2nodes", "cpu-per-call"), Value: plain2.cpuPerCall(), Unit: "µs CPU"},
		Result{Name: n("bus-vs-2nodes", "throughput"), Value: bus.throughput(), Unit: "req/s",
			Note: "the bus against plain request/reply spread over two responders on nodes 1 and 2 (the bus's topology before the lease holder's subject: what the split over two routes cost)"}.withBaseline(plain2.throughput()),
		Result{Name: n("bus-vs-2nodes", "cpu-per-call"), Value: bus.cpuPerCall(), Unit: "µs CPU"}.withBaseline(plain2.cpuPerCall()),
	}
}

// clusterConnect times connections to node 3: a container token, which
// the server hands to the auth callout (answered by a coordinator on node
// 1 or 2), against the coordinator's control nkey, which bypasses it.
// They alternate; each is closed before the next.
func clusterConnect(ctx context.Context, o options, s *clusterSetup) ([]Result, error) {
	n := o.clusterConnects
	progress("cluster: %d connects with a container token and %d with an nkey, alternating", n, n)
	toks := make([]string, n) // a fresh token each: no verification cache helps
	for i := range toks {
		var err error
		if toks[i], err = s.containerToken(rpcTown); err != nil {
			return nil, err
		}
	}
	pub, err := s.bc.creds.Control.PublicKey()
	if err != nil {
		return nil, err
	}
	url := s.bc.url(2)
	inbox := mustTown(rpcTown).Inbox()
	connect := func(opts ...nats.Option) (time.Duration, error) {
		t0 := time.Now()
		nc, err := nats.Connect(url, append(opts, nats.NoReconnect(), nats.Timeout(10*time.Second))...)
		d := time.Since(t0)
		if err != nil {
			return 0, err
		}
		nc.Close()
		return d, nil
	}
	var viaCallout, viaKey []time.Duration
	for i := range n {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		tokFirst := i%2 == 0
		for k := range 2 {
			if (k == 0) == tokFirst {
				d, err := connect(nats.Token(toks[i]), nats.CustomInboxPrefix(inbox), nats.Name("bench-container"))
				if err != nil {
					return nil, fmt.Errorf("container token connect %d: %w", i, err)
				}
				viaCallout = append(viaCallout, d)
			} else {
				d, err := connect(nats.Nkey(pub, s.bc.creds.Control.Sign), nats.CustomInboxPrefix(schemas.CoordinatorInbox), nats.Name("bench-nkey"))
				if err != nil {
					return nil, fmt.Errorf("nkey connect %d: %w", i, err)
				}
				viaKey = append(viaKey, d)
			}
		}
	}
	slices.Sort(viaCallout)
	slices.Sort(viaKey)
	p := func(ds []time.Duration, q float64) float64 { return ms(ds[min(int(float64(len(ds))*q), len(ds)-1)]) }
	return []Result{
		{Name: "cluster.connect.nkey", Value: p(viaKey, 0.5), Unit: "ms",
			Note: fmt.Sprintf("median of %d nats.Connect to node 3 with the coordinator's control nkey (auth_users: no callout); p90 %.2f ms", n, p(viaKey, 0.9))},
		Result{Name: "cluster.connect.callout", Value: p(viaCallout, 0.5), Unit: "ms",
			Note: fmt.Sprintf("median of %d nats.Connect to node 3 with a fresh container token each: node 3 sends the callout (sealed to the xkey) across a route to a coordinator on node 1 or 2, which verifies the token and signs the user JWT; p90 %.2f ms; baseline: the nkey user", n, p(viaCallout, 0.9))}.
			withBaseline(p(viaKey, 0.5)),
	}, nil
}

// clusterRotation times forced rotations of o.clusterTowns towns, each
// with an agentclient container on node 3, with the two coordinators
// holding about half the leases each. The baseline is the same rotation
// on one coordinator with its embedded server and as many containers, in
// this process at the same time: the two take turns round by round.
func clusterRotation(ctx context.Context, o options, s *clusterSetup, adm *nats.Conn) ([]Result, error) {
	n := o.clusterTowns
	progress("cluster rotation: the baseline, one coordinator on its embedded server with %d towns", n)
	d, err := startDaemon(ctx, newSecret(), "")
	if err != nil {
		return nil, err
	}
	defer d.close()
	if err := createTowns(ctx, d.Conn(), n, townName); err != nil {
		return nil, fmt.Errorf("creating towns: %w", err)
	}
	baseSrcs, baseConnect, baseRetried, err := connectContainers(ctx, n, d.URL(), d.containerToken)
	defer closeContainers(baseSrcs)
	if err != nil {
		return nil, err
	}

	lw, err := watchLeases(ctx, s.bc)
	if err != nil {
		return nil, err
	}
	defer lw.stop()
	progress("cluster rotation: creating %d towns on the cluster", n)
	if err := createTowns(ctx, adm, n, townName); err != nil {
		return nil, fmt.Errorf("creating towns: %w", err)
	}
	progress("cluster rotation: connecting %d containers to node 3", n)
	srcs, connect, retried, err := connectContainers(ctx, n, s.bc.url(2), s.containerToken)
	defer closeContainers(srcs)
	if err != nil {
		return nil, err
	}
	// Every town's lease held, and spread over both coordinators.
	var split map[string]int
	if err := waitFor(ctx, time.Minute, func() bool {
		split = lw.holders(townName, n)
		return split[""] == 0 && len(split) == 2 && spreadEvenly(split, n, 2)
	}); err != nil {
		return nil, fmt.Errorf("waiting for the leases of %d towns to be spread over 2 coordinators (have %v): %w", n, split, err)
	}
	counts := slices.Sorted(maps.Values(split))

	ro := o
	ro.rotTowns, ro.rotRounds = n, 1
	noop := func() (func() error, error) { return func() error { return nil }, nil }
	var clusterTimes, baseTimes rounds
	for r := range o.rotRounds {
		for i := range 2 {
			if (i+r)%2 == 0 {
				t, err := rotateAll(ctx, d.Conn(), ro, fmt.Sprintf("embedded baseline, %d/%d", r+1, o.rotRounds), noop)
				if err != nil {
					return nil, err
				}
				baseTimes.add(t)
			} else {
				t, err := rotateAll(ctx, adm, ro, fmt.Sprintf("cluster, %d/%d", r+1, o.rotRounds), noop)
				if err != nil {
					return nil, err
				}
				clusterTimes.add(t)
			}
		}
	}
	if sw := switches(srcs) + switches(baseSrcs); sw != 0 {
		return nil, fmt.Errorf("containers reconnected %d times during rotations; they should not", sw)
	}
	if o.clusterRotProfile != "" {
		if err := profileClusterRotation(ctx, o, ro, adm); err != nil {
			return nil, err
		}
	}
	med, all := medianMS(clusterTimes.each)
	bmed, ball := medianMS(baseTimes.each)
	rot := Result{Name: "cluster.rotation.fanout", Value: med, Unit: "ms",
		Note: fmt.Sprintf("median of %d forced rotations of all %d towns with 2 coordinators (nodes 1 and 2) holding %v of their leases; every container an agentclient.TokenSource on node 3, every rotation acknowledged (the new token stored), no container reconnected; token.rotate from an admin connection on node 3 (answered by either coordinator), %d in flight; rounds (ms): %v; %.2f of %d cores busy; baseline: the same on one coordinator with its embedded server, taking turns with it",
			len(clusterTimes.each), n, counts, o.rotInflight, all, clusterTimes.cores(), runtime.NumCPU())}.withBaseline(bmed)
	return []Result{
		{Name: "cluster.rotation.fanout.embedded", Value: bmed, Unit: "ms",
			Note: fmt.Sprintf("the baseline: the rotation phase's fan-out (one coordinator, embedded server, %d agentclient containers, token.rotate from Daemon.Conn()), in turns with the cluster's rounds; rounds (ms): %v; %.2f of %d cores busy", n, ball, baseTimes.cores(), runtime.NumCPU())},
		rot.judged(fmt.Sprintf("< %s", rotationTarget), med < ms(rotationTarget)),
		// Steadier than the rounds' wall time when the cores are shared.
		Result{Name: "cluster.rotation.cpu-per-rotation", Value: cpuPerRotation(clusterTimes, n), Unit: "µs CPU",
			Note: "process CPU (3 nodes, 2 coordinators, the containers, and the idle embedded baseline) per town rotated in the cluster's rounds; baseline: the same in the embedded rounds"}.withBaseline(cpuPerRotation(baseTimes, n)),
		Result{Name: "cluster.rotation.connect", Value: ms(connect), Unit: "ms",
			Note: fmt.Sprintf("agentclient.Start of %d containers on node 3, 32 at a time (a callout connect + token.get each; %d tried again after a failure, %d on the embedded server); baseline: the same on the embedded server (its custom authentication, no callout)", n, retried, baseRetried)}.withBaseline(ms(baseConnect)),
	}, nil
}

// cpuPerRotation is the process CPU of r per town rotated, in µs.
func cpuPerRotation(r rounds, towns int) float64 {
	if len(r.each) == 0 || towns == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / float64(len(r.each)*towns)
}

// add appends the rounds of t.
func (r *rounds) add(t rounds) {
	r.each = append(r.each, t.each...)
	r.wall += t.wall
	r.cpu += t.cpu
}

// profileClusterRotation writes a CPU profile of o.rotRounds extra
// cluster rotation rounds (-cluster-rotation-cpuprofile).
func profileClusterRotation(ctx context.Context, o, ro options, adm *nats.Conn) error {
	f, err := os.Create(o.clusterRotProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	ro.rotRounds = o.rotRounds
	_, err = rotateAll(ctx, adm, ro, "cluster, profiled", func() (func() error, error) { return func() error { return nil }, nil })
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	return f.Close()
}

// connectContainers starts n agentclient containers on url, one per town
// townName(i), 32 at a time, and says how long that took and how many
// starts were tried again (a connect can time out on a machine this
// loaded: each is tried up to 3 times). The sources started are returned
// even on failure, to be closed.
func connectContainers(ctx context.Context, n int, url string, mint func(string) (string, error)) ([]*agentclient.TokenSource, time.Duration, int, error) {
	srcs := make([]*agentclient.TokenSource, n) // each index written by one goroutine
	var retried atomic.Int64
	t0 := time.Now()
	if _, err := parallel(ctx, n, 32, func(i int) error {
		tok, err := mint(townName(i))
		if err != nil {
			return err
		}
		for attempt := 1; ; attempt++ {
			src, err := agentclient.Start(ctx, agentclient.Config{URL: url, Token: tok, ContainerID: "c-" + townName(i), Logger: discard})
			if err == nil {
				srcs[i] = src
				return nil
			}
			if attempt == 3 || ctx.Err() != nil {
				return err
			}
			retried.Add(1)
		}
	}); err != nil {
		return srcs, 0, int(retried.Load()), fmt.Errorf("connecting containers to %s: %w", url, err)
	}
	return srcs, time.Since(t0), int(retried.Load()), nil
}

// closeContainers closes them all at once: each Close waits for its
// connection.
func closeContainers(srcs []*agentclient.TokenSource) {
	var wg sync.WaitGroup
	for _, src := range srcs {
		if src != nil {
			wg.Go(src.Close)
		}
	}
	wg.Wait()
}

// spreadEvenly: no holder has more than ceil(n / members) + 1 towns.
func spreadEvenly(split map[string]int, n, members int) bool {
	for _, c := range split {
		if c > (n+members-1)/members+1 {
			return false
		}
	}
	return true
}

// clusterCoordinatorKill starts two coordinators with o.leaseTTL leases,
// lets them spread the towns' leases, then closes the connections of one
// under it (no Close: its leases stay in the bucket until they expire)
// and times until the other holds every town the first held.
func clusterCoordinatorKill(ctx context.Context, o options, s *clusterSetup) ([]Result, error) {
	n := o.clusterTowns
	progress("cluster failover: two coordinators with %s leases", o.leaseTTL)
	survivor, err := s.startCoordinator(ctx, 0, o.leaseTTL)
	if err != nil {
		return nil, err
	}
	defer survivor.Close()
	lw, err := watchLeases(ctx, s.bc)
	if err != nil {
		return nil, err
	}
	defer lw.stop()
	var survivorID string
	if err := waitFor(ctx, time.Minute, func() bool {
		m := lw.members()
		if len(m) == 1 {
			survivorID = m[0]
		}
		return len(m) == 1
	}); err != nil {
		return nil, fmt.Errorf("waiting for the first coordinator's membership (have %v): %w", lw.members(), err)
	}
	victim, err := s.startCoordinator(ctx, 1, o.leaseTTL)
	if err != nil {
		return nil, err
	}
	defer victim.Close()
	var split map[string]int
	if err := waitFor(ctx, time.Minute, func() bool {
		split = lw.holders(townName, n)
		return split[""] == 0 && len(split) == 2 && spreadEvenly(split, n, 2)
	}); err != nil {
		return nil, fmt.Errorf("waiting for the leases of %d towns to be spread over 2 coordinators (have %v): %w", n, split, err)
	}
	victimTowns := lw.townsNotHeldBy(survivorID, townName, n)

	progress("cluster failover: closing the connections of the coordinator on node 2 (it holds %d towns)", len(victimTowns))
	lapsedBefore := lw.lapses(survivorID)
	lw.resetGaps()
	start := time.Now()
	victim.Conn().Close()
	victim.StateConn().Close()
	var first time.Duration
	timeout := 10*o.leaseTTL + time.Minute
	if err := waitFor(ctx, timeout, func() bool {
		moved := lw.heldBy(survivorID, victimTowns)
		if moved > 0 && first == 0 {
			first = time.Since(start)
		}
		return moved == len(victimTowns)
	}); err != nil {
		return nil, fmt.Errorf("the survivor took %d of the %d towns: %w", lw.heldBy(survivorID, victimTowns), len(victimTowns), err)
	}
	took := time.Since(start)
	lapsed, gap := lw.lapses(survivorID)-lapsedBefore, lw.renewalGap(survivorID)
	target := o.leaseTTL + 5*time.Second
	return []Result{
		Result{Name: "cluster.failover.coordinator", Value: ms(took), Unit: "ms",
			Note: fmt.Sprintf("lease TTL %s (renewed every %s): the coordinator on node 2 lost its control and state connections with %d of %d towns' leases (not released); until the coordinator on node 1 held every one of them (from its leases bucket's watch); the first was taken after %.0f ms; meanwhile %d of the survivor's own leases lapsed (expired before it renewed them), and its longest gap between two renewals of one lease was %.0f ms (it renews one KV write per lease in turn, every third of the TTL); the dead coordinator's callout responder was left running (its connection is not reachable from outside the package)",
				o.leaseTTL, o.leaseTTL/3, len(victimTowns), n, ms(first), lapsed, ms(gap))}.
			judged(fmt.Sprintf("< TTL + 5 s = %s", target), took < target),
	}, nil
}

// leaseWatch follows the leases bucket: who holds each key.
type leaseWatch struct {
	nc *nats.Conn
	w  jetstream.KeyWatcher
	wg sync.WaitGroup

	mu     sync.Mutex
	holder map[string]string // key → holder id
	// lapsed counts, by holder, the town leases deleted or expired
	// under it.
	lapsed map[string]int
	// lastPut is when each key was last written; maxGap, by holder, the
	// longest time between two writes of one key by it since resetGaps
	// (how far its renewals fell behind).
	lastPut map[string]time.Time
	maxGap  map[string]time.Duration
}

// watchLeases follows the leases bucket from a state connection of its own.
func watchLeases(ctx context.Context, bc *benchCluster) (*leaseWatch, error) {
	nc, err := dial(bc.urls(), bc.creds.State, nats.Name("bench-lease-watch"))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	kv, err := js.KeyValue(ctx, schemas.BucketLeases)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening bucket %s: %w", schemas.BucketLeases, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		nc.Close()
		return nil, err
	}
	lw := &leaseWatch{nc: nc, w: w, holder: map[string]string{}, lapsed: map[string]int{},
		lastPut: map[string]time.Time{}, maxGap: map[string]time.Duration{}}
	lw.wg.Go(func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			lw.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				h, _, _ := strings.Cut(string(e.Value()), ":")
				now := time.Now()
				if last, ok := lw.lastPut[e.Key()]; ok && lw.holder[e.Key()] == h && strings.HasPrefix(e.Key(), "town.") {
					lw.maxGap[h] = max(lw.maxGap[h], now.Sub(last))
				}
				lw.holder[e.Key()], lw.lastPut[e.Key()] = h, now
			} else {
				if h, ok := lw.holder[e.Key()]; ok && strings.HasPrefix(e.Key(), "town.") {
					lw.lapsed[h]++
				}
				delete(lw.holder, e.Key())
				delete(lw.lastPut, e.Key())
			}
			lw.mu.Unlock()
		}
	})
	return lw, nil
}

// stop ends the watch: closing the connection closes its updates.
func (lw *leaseWatch) stop() {
	_ = lw.w.Stop()
	lw.nc.Close()
	lw.wg.Wait()
}

// renewalGap is the longest time between two writes of one town lease
// by id since resetGaps.
func (lw *leaseWatch) renewalGap(id string) time.Duration {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.maxGap[id]
}

func (lw *leaseWatch) resetGaps() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	clear(lw.maxGap)
}

// lapses is how many town leases were deleted or expired under id.
func (lw *leaseWatch) lapses(id string) int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.lapsed[id]
}

// members are the coordinators with a live membership key.
func (lw *leaseWatch) members() []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var ids []string
	for k := range lw.holder {
		if id, ok := strings.CutPrefix(k, "member."); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// holders counts the towns name(0..n-1) by holder ("" for none).
func (lw *leaseWatch) holders(name func(int) string, n int) map[string]int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	out := map[string]int{}
	for i := range n {
		out[lw.holder["town."+name(i)]]++
	}
	return out
}

// townsNotHeldBy are the lease keys of the towns held by anyone but id.
func (lw *leaseWatch) townsNotHeldBy(id string, name func(int) string, n int) []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var keys []string
	for i := range n {
		k := "town." + name(i)
		if h := lw.holder[k]; h != "" && h != id {
			keys = append(keys, k)
		}
	}
	return keys
}

// heldBy counts the keys id holds.
func (lw *leaseWatch) heldBy(id string, keys []string) int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	c := 0
	for _, k := range keys {
		if lw.holder[k] == id {
			c++
		}
	}
	return c
}

// clusterNodeKill runs a steady stream of KV writes to an R3 bucket of
// the state account on a cluster of real nats-server processes (bin), SIGKILLs
// the bucket's stream leader, and reports the longest stall between two
// acknowledged writes, and whether any acknowledged write was lost.
func clusterNodeKill(ctx context.Context, o options, bin string) ([]Result, error) {
	progress("cluster failover: starting 3 nats-server processes (%s)", bin)
	bc, err := startProcessCluster(ctx, bin)
	if err != nil {
		return nil, err
	}
	defer bc.close()
	setup, err := dial(bc.urls(), bc.creds.State, nats.Name("bench-failover-setup"))
	if err != nil {
		return nil, err
	}
	defer setup.Close()
	js, err := jetstream.New(setup)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: failoverBucket, History: 1, Replicas: clusterNodes, Storage: jetstream.FileStorage})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("creating the R3 bucket: %w", err)
	}
	var stalls []time.Duration
	var notes []string
	lost, acked := 0, 0
	for k := range o.failoverKills {
		leader, err := streamLeader(ctx, js, k > 0)
		if err != nil {
			return nil, err
		}
		writer := (leader + 1) % clusterNodes
		r, err := killUnderWrites(ctx, o, bc, leader, writer)
		if err != nil {
			return nil, err
		}
		stalls = append(stalls, r.stall)
		lost += r.lost
		acked += r.acked
		notes = append(notes, fmt.Sprintf("kill %d: %s (stream leader) killed, writer on %s, stall %.0f ms, first failed write after the kill said %q",
			k+1, cluster.NodeName(leader), cluster.NodeName(writer), ms(r.stall), r.firstErr))
		progress("cluster failover: kill %d/%d: writes stalled %s", k+1, o.failoverKills, r.stall.Round(time.Millisecond))
		if k < o.failoverKills-1 {
			if err := bc.restart(leader); err != nil {
				return nil, err
			}
		}
	}
	worst := slices.Max(stalls)
	stallTarget := coordinator.DefaultLeaseTTL / 2
	return []Result{
		Result{Name: "cluster.failover.node.stall", Value: ms(worst), Unit: "ms",
			Note: fmt.Sprintf("longest gap between two acknowledged KV Puts (one writer, a Put at most every %s, each waiting for its acknowledgement, %s deadline per attempt) on an R3 file bucket of the state account, 3 nats-server processes, when the bucket's stream leader is SIGKILLed; the writer is on a surviving node; %s; target: a lease of the default TTL (%s, renewed every third) outlasts it",
				o.failoverEvery, o.failoverTimeout, strings.Join(notes, "; "), coordinator.DefaultLeaseTTL)}.
			judged(fmt.Sprintf("< %s", stallTarget), worst < stallTarget),
		Result{Name: "cluster.failover.node.lost", Value: float64(lost), Unit: "writes",
			Note: fmt.Sprintf("acknowledged Puts not readable afterwards, of %d acknowledged across %d kill(s)", acked, o.failoverKills)}.
			judged("0", lost == 0),
	}, nil
}

// streamLeader finds the node that leads the failover bucket's stream,
// from $JS.API.STREAM.INFO's cluster.leader; with settled, it first waits
// until every replica is current (a restarted node caught up).
func streamLeader(ctx context.Context, js jetstream.JetStream, settled bool) (int, error) {
	leader := -1
	var last string
	err := waitFor(ctx, time.Minute, func() bool {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := js.Stream(c, "KV_"+failoverBucket)
		if err != nil {
			last = err.Error()
			return false
		}
		info, err := st.Info(c)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			last = fmt.Sprintf("no leader (%v)", err)
			return false
		}
		if settled {
			if len(info.Cluster.Replicas) != clusterNodes-1 {
				last = fmt.Sprintf("%d replicas", len(info.Cluster.Replicas))
				return false
			}
			for _, p := range info.Cluster.Replicas {
				if !p.Current || p.Offline {
					last = p.Name + " not current"
					return false
				}
			}
		}
		for i := range clusterNodes {
			if cluster.NodeName(i) == info.Cluster.Leader {
				leader = i
			}
		}
		last = "leader " + info.Cluster.Leader + " is not a node of the plan"
		return leader >= 0
	})
	if err != nil {
		return -1, fmt.Errorf("finding the stream leader of %s (last: %s): %w", failoverBucket, last, err)
	}
	return leader, nil
}

// killResult is what one kill under writes showed.
type killResult struct {
	stall       time.Duration
	acked, lost int
	firstErr    string
}

// killUnderWrites writes to the bucket from node writer, SIGKILLs node
// victim after a second, and goes on until writes have been acknowledged
// for a second after the kill; then it reads every acknowledged key back.
func killUnderWrites(ctx context.Context, o options, bc *benchCluster, victim, writer int) (killResult, error) {
	nc, err := dial(bc.url(writer), bc.creds.State, nats.Name("bench-failover-writer"))
	if err != nil {
		return killResult{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return killResult{}, err
	}
	kv, err := js.KeyValue(ctx, failoverBucket)
	if err != nil {
		return killResult{}, err
	}
	var (
		mu       sync.Mutex
		ackedAt  []time.Time
		keys     []string
		killedAt time.Time
		firstErr string
	)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		next := time.Now()
		for seq := 0; wctx.Err() == nil; seq++ {
			if d := time.Until(next); d > 0 {
				select {
				case <-wctx.Done():
					return
				case <-time.After(d):
				}
			}
			next = next.Add(o.failoverEvery)
			key := fmt.Sprintf("w.%08d", seq)
			pctx, cancel := context.WithTimeout(wctx, o.failoverTimeout)
			_, err := kv.Put(pctx, key, []byte(key))
			cancel()
			mu.Lock()
			if err == nil {
				ackedAt = append(ackedAt, time.Now())
				keys = append(keys, key)
			} else if firstErr == "" && !killedAt.IsZero() && wctx.Err() == nil {
				firstErr = err.Error()
			}
			mu.Unlock()
			if err != nil && time.Until(next) < 0 {
				next = time.Now() // do not burst to catch up after a stall
			}
		}
	})
	defer func() { stop(); wg.Wait() }()
	if err := waitFor(ctx, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ackedAt) > 0 && time.Since(ackedAt[0]) > time.Second
	}); err != nil {
		return killResult{}, fmt.Errorf("no write acknowledged before the kill: %w", err)
	}
	mu.Lock()
	killedAt = time.Now()
	mu.Unlock()
	bc.kill(victim)
	if err := waitFor(ctx, time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		last := ackedAt[len(ackedAt)-1]
		return last.After(killedAt) && last.Sub(firstAfter(ackedAt, killedAt)) > time.Second
	}); err != nil {
		return killResult{}, fmt.Errorf("writes did not resume after the kill: %w", err)
	}
	stop()
	wg.Wait()
	r := killResult{acked: len(keys), firstErr: firstErr}
	for i := 1; i < len(ackedAt); i++ {
		r.stall = max(r.stall, ackedAt[i].Sub(ackedAt[i-1]))
	}
	for _, k := range keys {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		e, err := kv.Get(gctx, k)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			r.lost++
		case err != nil:
			return r, fmt.Errorf("reading back %s: %w", k, err)
		case string(e.Value()) != k:
			r.lost++
		}
	}
	return r, nil
}

// firstAfter is the first time in ts (sorted) after t, or the last.
func firstAfter(ts []time.Time, t time.Time) time.Time {
	for _, x := range ts {
		if x.After(t) {
			return x
		}
	}
	return ts[len(ts)-1]
}
