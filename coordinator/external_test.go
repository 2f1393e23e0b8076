package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// externalServer runs a plain nats-server with JetStream on port, its
// store in dir: what `--nats-url` points at.
func externalServer(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second), "external server ready")
	return ns
}

// TestExternalNATSRestartedUnderEverything: with --nats-url, the NATS
// server restarts while the coordinator and a container keep running.
// Both reconnect on their own; rotation, RPC and the coordinator's view of
// the state buckets (its KV watches) carry on, and nothing stored is lost.
func TestExternalNATSRestartedUnderEverything(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	dir := t.TempDir()
	ns := externalServer(t, port, dir)
	defer func() { ns.Shutdown() }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	key, err := token.NewKey([]byte("external-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	issuer := token.NewIssuer(token.NewKeyRing(key), nil)
	d, err := coordinator.StartDaemon(context.Background(), issuer, coordinator.DaemonConfig{
		Config: coordinator.Config{TokenTTL: time.Minute, RefreshInterval: 200 * time.Millisecond, RequestTimeout: 2 * time.Second,
			Logger: bustest.Logger(t)},
		NatsURL: url,
	})
	require.NoError(t, err)
	defer d.Close()

	other, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.CustomInboxPrefix(schemas.AdminInbox))
	require.NoError(t, err)
	defer other.Close()
	call := func(method string, body, out any) error {
		b, _ := json.Marshal(body)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return bus.Call(ctx, other, &nats.Msg{Subject: "gastown.admin." + method, Data: b}, out)
	}
	require.NoError(t, call(schemas.AdminTownCreate, schemas.TownCreate{TownID: "X"}, nil))
	require.NoError(t, call(schemas.AdminRigAdd, schemas.RigAdd{TownID: "X", RigID: "r", GitURL: "/repo"}, nil))
	require.NoError(t, call(schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "X", BeadID: "before", RigID: "r", Title: "t"}, nil))

	tok, _, err := issuer.MintContainer("X", "", time.Minute)
	require.NoError(t, err)
	src, err := agentclient.Start(context.Background(), agentclient.Config{URL: url, Token: tok, ContainerID: "c", Logger: bustest.Logger(t)})
	require.NoError(t, err)
	defer src.Close()
	client := agentclient.NewClient(src, "", "")
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return client.Call(ctx, schemas.ToolPing, nil, nil)
	}
	require.NoError(t, ping())
	adopted := src.Adopted()
	require.Eventually(t, func() bool { return src.Adopted() > adopted+2 }, 10*time.Second, 10*time.Millisecond, "rotating")

	// The server goes away and comes back on the same port and store.
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = externalServer(t, port, dir)
	restarted := time.Now()

	// A write made by someone else straight into the bucket, as soon as
	// the server is back, reaches the coordinator promptly: its watch is
	// restarted on reconnect. (Left to itself, the old watch would notice
	// its lost consumer only after three missed 5 s heartbeats.)
	js, err := jetstream.New(other)
	require.NoError(t, err)
	now := time.Now().UTC()
	b, _ := json.Marshal(coordinator.Bead{TownID: "X", BeadID: "direct", Type: coordinator.BeadIssue, Status: coordinator.BeadOpen,
		RigID: "r", Title: "t", CreatedAt: now, UpdatedAt: now})
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, schemas.BucketBeads)
		if err == nil {
			_, err = kv.Put(ctx, schemas.Key("X", "direct"), b)
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "writing to the restarted server")
	seen := func(ids ...string) bool {
		var st coordinator.TownStatus
		if call(schemas.AdminStatus, schemas.TownRequest{TownID: "X"}, &st) != nil {
			return false
		}
		have := map[string]bool{}
		for _, b := range st.Beads {
			have[b.BeadID] = true
		}
		for _, id := range ids {
			if !have[id] {
				return false
			}
		}
		return true
	}
	require.Eventually(t, func() bool { return seen("before", "direct") }, 10*time.Second, 20*time.Millisecond,
		"the coordinator sees a write made by someone else within 10 s of the restart")
	t.Logf("the coordinator saw the direct write %s after the restart", time.Since(restarted).Round(time.Millisecond))

	require.Eventually(t, func() bool { return ping() == nil }, 30*time.Second, 50*time.Millisecond, "RPC works again")
	adopted = src.Adopted()
	require.Eventually(t, func() bool { return src.Adopted() > adopted+2 }, 30*time.Second, 10*time.Millisecond, "rotation resumes")
	require.Eventually(t, func() bool {
		return call(schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "X", BeadID: "after", RigID: "r", Title: "t"}, nil) == nil
	}, 30*time.Second, 50*time.Millisecond, "admin writes work again")
	require.True(t, seen("before", "direct", "after"), "nothing stored is lost")
}
