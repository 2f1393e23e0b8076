// Package coordinatortest runs a real coordinator daemon (embedded NATS,
// JetStream in a temporary directory) for tests, and restarts it in place.
package coordinatortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Harness is a running daemon and what it was made with.
type Harness struct {
	t       testing.TB
	Issuer  *token.Issuer
	Config  coordinator.DaemonConfig
	Daemon  *coordinator.Daemon
	dataDir string
	listen  string

	mu      sync.Mutex
	conns   map[string]*nats.Conn
	connsOf *coordinator.Daemon
}

// Start runs a daemon with cfg (zero fields get test defaults: a random
// secret, a free loopback port, a temporary data directory) and stops it
// when the test ends. opts change the daemon's settings before it starts
// (MetricsListen, say); restarts keep them.
func Start(t testing.TB, cfg coordinator.Config, opts ...func(*coordinator.DaemonConfig)) *Harness {
	t.Helper()
	return StartIn(t, cfg, t.TempDir(), opts...)
}

// StartIn is Start with the JetStream store in dataDir.
func StartIn(t testing.TB, cfg coordinator.Config, dataDir string, opts ...func(*coordinator.DaemonConfig)) *Harness {
	t.Helper()
	return startWith(t, cfg, dataDir, bus.Config{}, opts...)
}

// StartWith is Start with the embedded server configured by bc (TLS,
// monitoring); its Listen and DataDir are the harness's, and empty ops and
// admin passwords are the test ones.
func StartWith(t testing.TB, cfg coordinator.Config, bc bus.Config, opts ...func(*coordinator.DaemonConfig)) *Harness {
	t.Helper()
	return startWith(t, cfg, t.TempDir(), bc, opts...)
}

func startWith(t testing.TB, cfg coordinator.Config, dataDir string, bc bus.Config, opts ...func(*coordinator.DaemonConfig)) *Harness {
	t.Helper()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	key, err := token.NewKey([]byte(hex.EncodeToString(secret)))
	require.NoError(t, err)
	if cfg.Logger == nil {
		cfg.Logger = bustest.Logger(t)
	}
	h := &Harness{
		t:       t,
		Issuer:  token.NewIssuer(token.NewKeyRing(key), nowOf(cfg)),
		dataDir: dataDir,
		listen:  "127.0.0.1:0",
	}
	if bc.OpsPassword == "" {
		bc.OpsPassword = "ops-test-password"
	}
	if bc.AdminPassword == "" {
		bc.AdminPassword = "admin-test-password"
	}
	h.Config = coordinator.DaemonConfig{Config: cfg, Bus: bc}
	for _, o := range opts {
		o(&h.Config)
	}
	h.start()
	// Restarts reuse the port containers know.
	h.listen = h.Daemon.Server().Addr().String()
	t.Cleanup(h.Stop)
	return h
}

// nowOf is the clock cfg reads: Now, else Clock's, else nil (time.Now).
func nowOf(cfg coordinator.Config) func() time.Time {
	if cfg.Now == nil && cfg.Clock != nil {
		return cfg.Clock.Now
	}
	return cfg.Now
}

func (h *Harness) start() {
	h.t.Helper()
	require.NoError(h.t, h.TryStart())
}

// TryStart starts the stopped daemon again on the same port and data
// directory, and returns why it could not.
func (h *Harness) TryStart() error {
	dc := h.Config
	dc.Bus.Listen, dc.Bus.DataDir = h.listen, h.dataDir
	d, err := coordinator.StartDaemon(context.Background(), h.Issuer, dc)
	if err != nil {
		return err
	}
	h.Daemon = d
	return nil
}

// URL is where containers connect (tls:// when the server speaks TLS).
func (h *Harness) URL() string {
	if h.Config.Bus.TLS.Enabled() {
		return "tls://" + h.listen
	}
	return "nats://" + h.listen
}

// Stop stops the daemon (safe when stopped).
func (h *Harness) Stop() {
	h.mu.Lock()
	for _, nc := range h.conns {
		nc.Close()
	}
	h.conns = nil
	h.mu.Unlock()
	if h.Daemon != nil {
		h.Daemon.Close()
		h.Daemon = nil
	}
}

// Restart stops the daemon and starts it again on the same port and data
// directory. now, when not nil, replaces the clock of the new daemon and
// its issuer.
func (h *Harness) Restart(now func() time.Time) {
	h.t.Helper()
	h.Stop()
	if now != nil {
		h.Config.Now = now
		h.Issuer = h.Issuer.WithClock(now)
	}
	h.start()
}

// Crash stops the daemon the hard way: its NATS server goes first, so the
// coordinator can neither answer nor release its leases, as if the process
// were killed. Its connections go with it, as a killed process's do, so
// nothing of it waits out a request timeout on them while it stops. Then
// it starts again on the same port and data directory.
func (h *Harness) Crash() {
	h.t.Helper()
	h.Daemon.Server().Close()
	h.Daemon.Conn().Close()
	h.Daemon.StateConn().Close()
	h.Stop()
	h.start()
}

// Conn is an in-process connection with every permission in the control
// account, made for the test and closed when it ends. Its inbox prefix is
// the coordinator's, so the coordinator does not answer its requests (the
// reply rule): call tools with TownConn and admin methods with AdminConn.
func (h *Harness) Conn() *nats.Conn { return h.connect("") }

// TownConn is an in-process connection with every permission and town's
// inbox prefix, as a container of town would have, for calling its tools
// with whatever headers a test wants.
func (h *Harness) TownConn(town string) *nats.Conn { return h.connect(schemas.InboxRoot + "." + town) }

// AdminConn is an in-process connection with every permission and the
// administrator's inbox prefix, for calling admin methods.
func (h *Harness) AdminConn() *nats.Conn { return h.connect(schemas.AdminInbox) }

// StateConn is the daemon's own connection to JetStream (the state
// account), for reading state.
func (h *Harness) StateConn() *nats.Conn { return h.Daemon.StateConn() }

// connect returns an in-process connection with inbox prefix (the
// coordinator's when empty), opened on first use for each daemon and
// closed when the test ends or the daemon stops.
func (h *Harness) connect(inbox string) *nats.Conn {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil || h.connsOf != h.Daemon {
		h.conns, h.connsOf = map[string]*nats.Conn{}, h.Daemon
	}
	if nc := h.conns[inbox]; nc != nil {
		return nc
	}
	var opts []nats.Option
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := h.Daemon.Server().Connect(h.t.Name(), opts...)
	require.NoError(h.t, err)
	h.t.Cleanup(nc.Close)
	h.conns[inbox] = nc
	return nc
}

// ContainerToken mints a container token for town.
func (h *Harness) ContainerToken(town string) string {
	h.t.Helper()
	tok, _, err := h.Issuer.MintContainer(town, "", 8*time.Hour)
	require.NoError(h.t, err)
	return tok
}
