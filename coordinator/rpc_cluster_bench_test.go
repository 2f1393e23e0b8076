package coordinator_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// BenchmarkClusterPing is the bench program's cluster RPC rows as a Go
// benchmark, for profiles and allocation counts: an in-process 3-node
// cluster, two coordinators in cluster mode on nodes 1 and 2, a
// container on node 3 calling ping ("bus"), against plain request/reply
// from node 3 to a fixed responder on node 1 ("plain": the callout's
// nkey user on both ends, same subject, headers, body and reply bytes)
// and against "plain-2nodes", two such responders in a queue group on
// nodes 1 and 2 (the bus's topology without its middleware). Each runs 32 callers per CPU on one connection.
func BenchmarkClusterPing(b *testing.B) {
	c := clustertest.StartInProcess(b, clustertest.Options{})
	c.WaitReady()
	key, err := token.NewKey([]byte("cluster-bench-secret-of-at-least-32-bytes"))
	if err != nil {
		b.Fatal(err)
	}
	issuer := token.NewIssuer(token.NewKeyRing(key), nil)
	const adminPW = "admin-password-of-the-cluster-bench"
	for node := range 2 {
		cfg := coordinator.Config{Replicas: 3, Logger: slog.New(slog.DiscardHandler)}
		cfg.Limits.RPCRate = 1e9 // charged on every call, never refusing
		d, err := coordinator.StartDaemon(context.Background(), issuer, coordinator.DaemonConfig{
			Config: cfg, Bus: bus.Config{AdminPassword: adminPW, Logger: slog.New(slog.DiscardHandler)},
			NatsURL: c.URLs()[node], Cluster: c.Creds(),
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(d.Close)
	}
	adm, err := nats.Connect(c.URLs()[2], nats.UserInfo(bus.AdminUser, adminPW), nats.CustomInboxPrefix(schemas.AdminInbox))
	if err != nil {
		b.Fatal(err)
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const town = "bench"
	body, _ := json.Marshal(schemas.TownCreate{TownID: town})
	if err := bus.Call(ctx, adm, &nats.Msg{Subject: schemas.AdminRoot + "." + schemas.AdminTownCreate, Data: body}, nil); err != nil {
		b.Fatal(err)
	}
	tok, _, err := issuer.MintContainer(town, "", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	src, err := agentclient.Start(ctx, agentclient.Config{URL: c.URLs()[2], Token: tok, ContainerID: "c-bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(src.Close)
	client := agentclient.NewClient(src, "", "")

	reply, _ := schemas.ResultReply(schemas.PingResult{TownID: town})
	tt, _ := schemas.ForTown(town)
	subject, _ := tt.RPC(schemas.ToolPing)
	responder, err := cluster.Dial(c.URLs()[:1], c.Creds().Auth, nats.IgnoreDiscoveredServers())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(responder.Close)
	if _, err := responder.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
		b.Fatal(err)
	}
	// The bus's topology without the middleware: two responders in a
	// queue group on nodes 1 and 2, as the two coordinators are.
	queued := subject + ".queued"
	for node := range 2 {
		r, err := cluster.Dial(c.URLs()[node:node+1], c.Creds().Auth, nats.IgnoreDiscoveredServers())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(r.Close)
		if _, err := r.QueueSubscribe(queued, "bench", func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
			b.Fatal(err)
		}
	}
	requester, err := cluster.Dial(c.URLs()[2:], c.Creds().Auth, nats.IgnoreDiscoveredServers(), nats.CustomInboxPrefix(tt.Inbox()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(requester.Close)

	plainTo := func(subject string) func(context.Context) error {
		return func(ctx context.Context) error {
			m := nats.NewMsg(subject)
			m.Data = []byte("{}")
			m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
			_, err := requester.RequestMsgWithContext(ctx, m)
			return err
		}
	}
	calls := map[string]func(context.Context) error{
		"bus": func(ctx context.Context) error {
			var out schemas.PingResult
			return client.Call(ctx, schemas.ToolPing, nil, &out)
		},
		"plain":        plainTo(subject),
		"plain-2nodes": plainTo(queued),
	}
	for _, name := range []string{"bus", "plain", "plain-2nodes"} {
		for { // the responders' interest crosses the routes a moment later
			if err := calls[name](ctx); err == nil {
				break
			} else if ctx.Err() != nil {
				b.Fatal(name, err)
			}
		}
	}
	// Warm up, so the first one measured does not pay for the cluster
	// settling (leaders elected, leases taken) after its start.
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 100 {
				for _, call := range calls {
					_ = call(ctx)
				}
			}
		})
	}
	wg.Wait()
	for _, name := range []string{"bus", "plain", "plain-2nodes"} {
		call := calls[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32)
			cpu := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					if err := call(ctx); err != nil {
						b.Error(err)
					}
					cancel()
				}
			})
			reportCPU(b, cpu)
		})
	}
}
