package coordinator_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	cerrors "github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

func withMetrics(dc *coordinator.DaemonConfig) { dc.MetricsListen = "127.0.0.1:0" }

// get fetches path from the daemon's metrics listener.
func get(t *testing.T, h *coordinatortest.Harness, path string) (int, string) {
	t.Helper()
	addr := h.Daemon.MetricsAddr()
	require.NotEmpty(t, addr, "the daemon serves metrics")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// scrape is one /metrics page, parsed, and its text.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

func scrapeMetrics(t *testing.T, h *coordinatortest.Harness) scrape {
	t.Helper()
	code, text := get(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code, text)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err)
	return scrape{text: text, families: fams}
}

// value is the value of the series of name whose labels include labels
// (name=value pairs); a histogram's value is its count. ok is false when
// there is no such series.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	f, ok := s.families[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	require.True(t, ok, "no series %s%v in:\n%s", name, labels, s.text)
	return v
}

// TestMetricsAndHealth: with --metrics-listen the daemon serves /healthz,
// /readyz and /metrics; a rotation pushed to a connected container, tool
// calls, a refused connection and a misdirected request move their
// counters; state gauges follow the store; no token or password ever
// shows.
func TestMetricsAndHealth(t *testing.T) {
	// A short lease, so the new town's is taken within a few ms.
	h := coordinatortest.Start(t, coordinator.Config{LeaseTTL: 2 * time.Second}, withMetrics)

	code, body := get(t, h, "/healthz")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get(t, h, "/readyz")
	require.Equal(t, http.StatusOK, code, body)

	before := scrapeMetrics(t, h)
	require.Zero(t, before.must(t, "gastown_rotations_acknowledged_total"))
	require.Zero(t, before.must(t, "gastown_rpc_requests_total", "method", "ping", "code", "ok"))

	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "M", UserID: "u1"}, nil))
	require.NoError(t, admin(t, h, schemas.AdminRigAdd, schemas.RigAdd{TownID: "M", RigID: "r", GitURL: "/nonexistent/r"}, nil))
	require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "M", BeadID: "b1", RigID: "r", Title: "work"}, nil))
	bootstrap := h.ContainerToken("M")
	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: h.URL(), Token: bootstrap, ContainerID: "c-M", Logger: bustest.Logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(src.Close)

	var rot schemas.RotateResult
	require.NoError(t, admin(t, h, schemas.AdminTokenRotate, schemas.TownRequest{TownID: "M"}, &rot))
	require.True(t, rot.Acknowledged, "%+v", rot)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A rotation of a town with no container fails as idle.
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "Z"}, nil))
	require.NoError(t, admin(t, h, schemas.AdminTokenRotate, schemas.TownRequest{TownID: "Z"}, &rot))
	require.True(t, rot.Idle, "%+v", rot)
	// A token asked for: its reply carries one. (The container asked for
	// one at start, too.)
	gotBefore := scrapeMetrics(t, h).must(t, "gastown_tokens_issued_total", "how", "token.get")
	mt, err := schemas.ForTown("M")
	require.NoError(t, err)
	var fresh schemas.TokenRotation
	require.NoError(t, bus.Request(ctx, h.TownConn("M"), mt.TokenGet(), &schemas.TokenRequest{TownID: "M", ContainerID: "c-M"}, &fresh))
	require.NotEmpty(t, fresh.Token)
	var pong map[string]any
	require.NoError(t, agentclient.NewClient(src, "", "").Call(ctx, schemas.ToolPing, nil, &pong))
	// A call with no token, one to no such tool.
	_, err = rpc(t, h, "M", schemas.ToolPing, "", "", "", nil, nil)
	require.True(t, cerrors.Is(err, schemas.ErrUnauthenticated), "%v", err)
	_, err = rpc(t, h, "M", "no.such.tool", src.Token(), "", "", nil, nil)
	require.True(t, cerrors.Is(err, schemas.ErrNotFound), "%v", err)
	// A wrong admin password, refused at connect.
	bad, err := nats.Connect(h.URL(), nats.UserInfo(bus.AdminUser, "not-the-password"), nats.MaxReconnects(0))
	if err == nil {
		bad.Close()
	}
	require.Error(t, err)
	// A request whose reply is not the town's own inbox: dropped.
	require.NoError(t, h.Conn().PublishMsg(&nats.Msg{Subject: "gastown.town.M.rpc.ping", Reply: "_INBOX.elsewhere", Header: nats.Header{
		schemas.AuthorizationHeader: []string{schemas.BearerPrefix + src.Token()},
	}}))

	// An operator and an administrator connected with their passwords.
	for _, u := range [][2]string{{bus.OpsUser, "ops-test-password"}, {bus.AdminUser, "admin-test-password"}} {
		nc, err := nats.Connect(h.URL(), nats.UserInfo(u[0], u[1]))
		require.NoError(t, err, u[0])
		t.Cleanup(nc.Close)
	}
	// A heartbeat, a malformed one, and one naming another town.
	hb, err := schemas.Encode(&schemas.Heartbeat{TownID: "M", ContainerID: "c-M", SentAt: time.Now()})
	require.NoError(t, err)
	other, err := schemas.Encode(&schemas.Heartbeat{TownID: "N", ContainerID: "c-M", SentAt: time.Now()})
	require.NoError(t, err)
	for _, data := range [][]byte{hb, []byte("not json"), other} {
		require.NoError(t, h.TownConn("M").Publish("gastown.town.M.heartbeat", data))
	}

	var s scrape
	require.Eventually(t, func() bool {
		s = scrapeMetrics(t, h)
		dropped, _ := s.value("gastown_reply_rule_drops_total")
		leases, _ := s.value("gastown_leases_held")
		beats, _ := s.value("gastown_heartbeats_received_total")
		otherTown, _ := s.value("gastown_heartbeats_dropped_total", "reason", "other_town")
		// Each heartbeat is handled on a goroutine of its own: the three
		// are counted in any order.
		malformed, _ := s.value("gastown_heartbeats_dropped_total", "reason", "malformed")
		return dropped >= 1 && leases >= 2 && beats >= 1 && otherTown >= 1 && malformed >= 1
	}, 10*time.Second, 20*time.Millisecond, "the misdirected request and the heartbeats are counted, the town's lease is taken")
	require.Equal(t, 1.0, s.must(t, "gastown_heartbeats_received_total"))
	require.Equal(t, 1.0, s.must(t, "gastown_heartbeats_dropped_total", "reason", "malformed"))

	require.Equal(t, 1.0, s.must(t, "gastown_rotations_pushed_total"))
	require.Equal(t, 1.0, s.must(t, "gastown_rotations_acknowledged_total"))
	require.Equal(t, 1.0, s.must(t, "gastown_rotation_duration_seconds"), "one acknowledgement timed")
	require.Equal(t, 1.0, s.must(t, "gastown_tokens_issued_total", "how", "push"))
	require.Zero(t, s.must(t, "gastown_rotations_failed_total", "reason", "no_answer"))
	require.Equal(t, 1.0, s.must(t, "gastown_rotations_failed_total", "reason", "no_container"))
	require.Equal(t, gotBefore+1, s.must(t, "gastown_tokens_issued_total", "how", "token.get"))
	require.Equal(t, 1.0, s.must(t, "gastown_rpc_requests_total", "method", "ping", "code", "ok"))
	require.Equal(t, 1.0, s.must(t, "gastown_rpc_requests_total", "method", "ping", "code", "unauthenticated"))
	require.Equal(t, 1.0, s.must(t, "gastown_rpc_requests_total", "method", "unknown", "code", "not_found"))
	require.Equal(t, 2.0, s.must(t, "gastown_rpc_duration_seconds", "method", "ping"))
	require.Equal(t, 1.0, s.must(t, "gastown_auth_refusals_total", "reason", "wrong_password"))
	require.GreaterOrEqual(t, s.must(t, "gastown_connections", "kind", "container"), 1.0)
	require.Equal(t, 1.0, s.must(t, "gastown_connections", "kind", "ops"))
	require.Equal(t, 1.0, s.must(t, "gastown_connections", "kind", "admin"))
	require.Zero(t, s.must(t, "gastown_connections", "kind", "recovery"))
	require.Equal(t, 2.0, s.must(t, "gastown_towns"))
	require.Equal(t, 1.0, s.must(t, "gastown_beads", "type", "issue", "status", "open"))
	require.Equal(t, 2.0, s.must(t, "gastown_leases_held"))
	require.Zero(t, s.must(t, "gastown_store_write_errors_total", "bucket", schemas.BucketBeads))
	require.Zero(t, s.must(t, "gastown_store_failed"))
	require.Zero(t, s.must(t, "gastown_limit_refusals_total", "limit", "rpc_rate"))

	// No label names a town, and nothing secret is on the page.
	require.NotContains(t, s.text, `"M"`)
	for _, secret := range []string{bootstrap, src.Token(), fresh.Token, "admin-test-password", "ops-test-password", "not-the-password", "eyJ"} {
		require.NotContains(t, s.text, secret)
	}
}

// TestMetricsAgentsByStatus: the agents gauge is read from the cache at
// scrape time, and a sling that cannot dispatch counts a dispatch and its
// failure.
func TestMetricsAgentsByStatus(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{}, withMetrics)
	townFixture(t, h)
	s := scrapeMetrics(t, h)
	require.Equal(t, 1.0, s.must(t, "gastown_agents", "role", schemas.RoleMayor, "status", coordinator.AgentIdle.String())+
		s.must(t, "gastown_agents", "role", schemas.RoleMayor, "status", coordinator.AgentWorking.String()))
	require.Equal(t, 2.0, s.must(t, "gastown_agents", "role", schemas.RolePolecat, "status", coordinator.AgentIdle.String())+
		s.must(t, "gastown_agents", "role", schemas.RolePolecat, "status", coordinator.AgentWorking.String()))
	require.Eventually(t, func() bool {
		s = scrapeMetrics(t, h)
		d, _ := s.value("gastown_dispatches_total")
		f, _ := s.value("gastown_dispatch_failures_total")
		return d >= 1 && f >= 1
	}, 10*time.Second, 20*time.Millisecond, "patrol's dispatches to a town with no container fail, and are counted")
}

// TestMetricsListenErrors: a bad or busy --metrics-listen address stops
// the daemon from starting, saying what to do, and leaves nothing running.
func TestMetricsListenErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	for _, tc := range []struct{ name, addr, want string }{
		{"no port", "127.0.0.1", "missing port"},
		{"busy", busy.Addr().String(), "address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := token.NewKey([]byte(strings.Repeat("k", 64)))
			require.NoError(t, err)
			_, err = coordinator.StartDaemon(context.Background(), token.NewIssuer(token.NewKeyRing(key), nil), coordinator.DaemonConfig{
				Bus:           bus.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()},
				MetricsListen: tc.addr,
			})
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, cerrors.FlattenHints(err), "--metrics-listen")
		})
	}
}

// TestMetricsListenerFreedWhenStartFails: a daemon whose NATS server
// cannot start gives its metrics address back.
func TestMetricsListenerFreedWhenStartFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	metricsAddr := free.Addr().String()
	require.NoError(t, free.Close())

	key, err := token.NewKey([]byte(strings.Repeat("k", 64)))
	require.NoError(t, err)
	_, err = coordinator.StartDaemon(context.Background(), token.NewIssuer(token.NewKeyRing(key), nil), coordinator.DaemonConfig{
		Bus:           bus.Config{Listen: busy.Addr().String(), DataDir: t.TempDir()},
		MetricsListen: metricsAddr,
	})
	require.Error(t, err)
	again, err := net.Listen("tcp", metricsAddr)
	require.NoError(t, err, "the metrics address is free again")
	require.NoError(t, again.Close())
}

// TestMetricsDaemonClose: Close stops the listener (twice is safe), and a
// daemon without MetricsListen serves nothing.
func TestMetricsDaemonClose(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{}, withMetrics)
	addr := h.Daemon.MetricsAddr()
	h.Daemon.Close()
	h.Daemon.Close()
	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "nothing listens after Close")

	plain := coordinatortest.Start(t, coordinator.Config{})
	require.Empty(t, plain.Daemon.MetricsAddr())
}

// TestMetricsCountLimitRefusals: tool calls over the town's rate are
// answered resource_exhausted and counted both as calls with that code and
// as refusals of the rpc_rate limit.
func TestMetricsCountLimitRefusals(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{RPCRate: 0.001, RPCBurst: 2}}, withMetrics)
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "L"}, nil))
	token := h.ContainerToken("L")
	exhausted := 0
	for range 5 {
		_, err := rpc(t, h, "L", schemas.ToolPing, token, "", "", nil, nil)
		if cerrors.Is(err, schemas.ErrResourceExhausted) {
			exhausted++
		} else {
			require.NoError(t, err)
		}
	}
	require.Equal(t, 3, exhausted, "a burst of 2, then refusals")
	s := scrapeMetrics(t, h)
	require.Equal(t, 2.0, s.must(t, "gastown_rpc_requests_total", "method", "ping", "code", "ok"))
	require.Equal(t, 3.0, s.must(t, "gastown_rpc_requests_total", "method", "ping", "code", "resource_exhausted"))
	require.Equal(t, 3.0, s.must(t, "gastown_limit_refusals_total", "limit", "rpc_rate"))
}

// TestMetricsDeadAgent: a working agent and its bead show in the gauges;
// when its container goes silent it is declared dead, and the counter
// says so (what patrol does next is liveness_test's).
func TestMetricsDeadAgent(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour}, withMetrics)
	slingOne(t, h)
	c := startBeating(t, h, "T", interval/2)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.True(t, res.Dispatched, res.Error)
	s := scrapeMetrics(t, h)
	require.Equal(t, 1.0, s.must(t, "gastown_agents", "role", schemas.RolePolecat, "status", coordinator.AgentWorking.String()))
	// The sling's dispatch; the mayor's too when patrol has started it
	// since the container's first heartbeat.
	require.Contains(t, []float64{1, 2}, s.must(t, "gastown_dispatches_total"))
	require.Zero(t, s.must(t, "gastown_dispatch_failures_total"))
	require.Equal(t, 1.0, s.must(t, "gastown_beads", "type", "issue", "status", "in_progress"))

	c.kill()
	require.Eventually(t, func() bool {
		s = scrapeMetrics(t, h)
		// At least the polecat; the mayor too when patrol had started it
		// before the container went silent.
		n, _ := s.value("gastown_agents_declared_dead_total")
		return n >= 1
	}, 30*time.Second, interval/2, "the silent agent is declared dead")
}

// TestMetricsOnExternalNATS: with --nats-url the coordinator's metrics are
// served (the embedded server's are not: there is none), and /readyz
// answers 503 while the connection to that server is down, 200 again once
// it is back.
func TestMetricsOnExternalNATS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	dir := t.TempDir()
	ns := externalServer(t, port, dir)
	defer func() { ns.Shutdown() }()

	key, err := token.NewKey([]byte(strings.Repeat("e", 64)))
	require.NoError(t, err)
	d, err := coordinator.StartDaemon(context.Background(), token.NewIssuer(token.NewKeyRing(key), nil), coordinator.DaemonConfig{
		Config:  coordinator.Config{RequestTimeout: 200 * time.Millisecond, Logger: bustest.Logger(t)},
		NatsURL: "nats://" + l.Addr().String(), MetricsListen: "127.0.0.1:0",
	})
	require.NoError(t, err)
	defer d.Close()
	h := &coordinatortest.Harness{Daemon: d}

	code, body := get(t, h, "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	s := scrapeMetrics(t, h)
	require.Zero(t, s.must(t, "gastown_towns"))
	_, embedded := s.value("gastown_connections")
	require.False(t, embedded, "no embedded server, no connection counts")

	ns.Shutdown()
	require.Eventually(t, func() bool {
		code, body = get(t, h, "/readyz")
		return code == http.StatusServiceUnavailable
	}, 10*time.Second, 20*time.Millisecond)
	require.Contains(t, body, "not connected to NATS")

	ns = externalServer(t, port, dir)
	require.Eventually(t, func() bool {
		code, body = get(t, h, "/readyz")
		return code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "ready again once reconnected")
}
