package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// daemon is a coordinator started in this process on loopback TCP with a
// temporary data directory.
type daemon struct {
	*coordinator.Daemon
	issuer *token.Issuer
	secret string
	dir    string
	owned  bool
	// conn is an in-process connection with every permission and the
	// administrator's inbox, so the coordinator answers its admin calls.
	conn *nats.Conn
	// base is how many connections the daemon and conn hold themselves.
	base int
}

// serveMetrics makes every daemon of the run serve Prometheus metrics on a
// free loopback port (-metrics), as an operator runs it, so the figures
// include the cost of the instruments.
var serveMetrics = true

// newSecret makes a random signing secret: 64 hex characters.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startDaemon starts a coordinator with secret on dir (a new temporary
// directory when dir is empty, removed by close). Dispatch retries are
// pushed an hour away, so agents that could not be dispatched stay quiet.
// mods change the coordinator's configuration.
func startDaemon(ctx context.Context, secret, dir string, mods ...func(*coordinator.Config)) (*daemon, error) {
	key, err := token.NewKey([]byte(secret))
	if err != nil {
		return nil, err
	}
	d := &daemon{issuer: token.NewIssuer(token.NewKeyRing(key), time.Now), secret: secret, dir: dir}
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "gastown-bench-*"); err != nil {
			return nil, err
		}
		d.owned = true
	}
	cfg := coordinator.Config{Logger: discard, DispatchCooldown: time.Hour}
	for _, m := range mods {
		m(&cfg)
	}
	dc := coordinator.DaemonConfig{
		Config: cfg,
		Bus:    bus.Config{Listen: "127.0.0.1:0", DataDir: d.dir, Logger: discard},
	}
	if serveMetrics {
		dc.MetricsListen = "127.0.0.1:0"
	}
	d.Daemon, err = coordinator.StartDaemon(ctx, d.issuer, dc)
	if err != nil {
		d.removeDir()
		return nil, err
	}
	if d.conn, err = d.Server().Connect("bench", nats.CustomInboxPrefix(schemas.AdminInbox)); err != nil {
		d.close()
		return nil, err
	}
	d.base = d.Server().NumClients()
	return d, nil
}

// Conn is the bench's own connection: every permission, the admin inbox.
func (d *daemon) Conn() *nats.Conn { return d.conn }

// URL is where containers connect.
func (d *daemon) URL() string { return "nats://" + d.Server().Addr().String() }

// containerToken mints a container token for town, valid 8 h.
func (d *daemon) containerToken(town string) (string, error) {
	tok, _, err := d.issuer.MintContainer(town, "", 8*time.Hour)
	return tok, err
}

func (d *daemon) close() {
	if d.conn != nil {
		d.conn.Close()
	}
	d.Close()
	d.removeDir()
}

func (d *daemon) removeDir() {
	if d.owned {
		_ = os.RemoveAll(d.dir)
	}
}

// admin calls gastown.admin.<method> on the daemon's own connection and
// decodes the result into out.
func admin(ctx context.Context, nc *nats.Conn, method string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return bus.Call(ctx, nc, &nats.Msg{Subject: "gastown.admin." + method, Data: b}, out)
}

// parallel runs f(0..n-1), at most workers at a time, and returns the
// first error and how many calls failed.
func parallel(ctx context.Context, n, workers int, f func(i int) error) (int, error) {
	var (
		next    atomic.Int64
		failed  atomic.Int64
		firstMu sync.Mutex
		first   error
		wg      sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					failed.Add(1)
					firstMu.Lock()
					if first == nil {
						first = fmt.Errorf("item %d: %w", i, err)
					}
					firstMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return int(failed.Load()), first
}

// createTowns creates towns named by name(0..n-1) through the admin API.
func createTowns(ctx context.Context, nc *nats.Conn, n int, name func(int) string) error {
	_, err := parallel(ctx, n, 64, func(i int) error {
		return admin(ctx, nc, "town.create", map[string]string{"townId": name(i)}, nil)
	})
	return err
}
