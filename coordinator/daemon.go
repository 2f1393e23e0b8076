package coordinator

import (
	"context"
	"net/url"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// DaemonConfig is everything `gastown coordinator` needs.
type DaemonConfig struct {
	Config
	// Bus configures the embedded server; ignored when NatsURL is set.
	Bus bus.Config
	// NatsURL, when set, uses an existing NATS server or cluster instead of
	// the embedded one. Its connection permissions are that cluster's own.
	NatsURL string
	// Cluster, with NatsURL, runs on a NATS cluster made by `gastown
	// cluster init`: the coordinator connects with these keys, answers the
	// servers' auth callout, and kicks revoked connections on every node
	// (cluster.go). Without it, NatsURL's server grants permissions itself.
	Cluster *cluster.Creds
	// MetricsListen, when set (host:port; port 0 picks a free one), serves
	// /metrics, /healthz and /readyz there (httpserver.go). Off when empty.
	MetricsListen string
}

// Daemon is a running coordinator with its bus connection and, by default,
// its embedded NATS server.
type Daemon struct {
	srv *bus.Server
	// nc is the control connection; sc the state connection (nc itself on
	// an existing cluster).
	nc, sc    *nats.Conn
	co        *Coordinator
	clientURL string
	// http serves metrics and health when DaemonConfig.MetricsListen is set.
	http    *httpServer
	metrics *Metrics
	// cluster is what runs on a cluster besides the coordinator.
	cluster *clusterSide
}

// StartDaemon starts the embedded server (unless dc.NatsURL is set),
// connects, and starts the coordinator. Close stops it all.
func StartDaemon(ctx context.Context, issuer *Issuer, dc DaemonConfig) (*Daemon, error) {
	cfg, err := dc.Config.withDefaults()
	if err != nil {
		return nil, errors.Wrap(err, "coordinator configuration")
	}
	d := &Daemon{}
	// The token state exists before the server, so the authorizer refuses
	// every token until the state (and its revocations) is loaded.
	state := newRevocations()
	opts := []Option{withTokenState(state)}
	if dc.MetricsListen != "" {
		// First, so a bad or busy address is reported before anything starts.
		d.metrics = NewMetrics()
		if d.http, err = startHTTP(dc.MetricsListen, d.metrics.Registry(), d.daemonCheck, cfg.Logger); err != nil {
			return nil, err
		}
		opts = append(opts, WithMetrics(d.metrics))
	}
	switch {
	case dc.NatsURL != "" && dc.Cluster != nil:
		more, err := d.startCluster(ctx, cfg, dc, issuer, state)
		if err != nil {
			d.Close()
			return nil, err
		}
		opts = append(opts, more...)
		cfg.Logger.Info("running on a NATS cluster", "url", d.clientURL, "replicas", cfg.Replicas)
	case dc.NatsURL == "":
		auth, err := NewConnAuthorizer(issuer, cfg, state)
		if err != nil {
			d.Close()
			return nil, err
		}
		bc := dc.Bus
		bc.Tokens = auth
		if bc.Logger == nil {
			bc.Logger = cfg.Logger.With(KeyComponent, "nats")
		}
		if d.srv, err = bus.Start(ctx, bc); err != nil {
			d.Close()
			return nil, err
		}
		if d.nc, err = d.srv.ConnectCoordinator("gastown-coordinator"); err != nil {
			d.Close()
			return nil, err
		}
		if d.sc, err = d.srv.ConnectState("gastown-coordinator-state"); err != nil {
			d.Close()
			return nil, err
		}
		d.clientURL = d.srv.ClientURL()
		opts = append(opts, WithKicker(d.srv), WithStateConn(d.sc))
		if d.metrics != nil {
			d.metrics.reg.MustRegister(&busCollector{srv: d.srv})
		}
	default:
		if d.nc, err = nats.Connect(dc.NatsURL,
			nats.Name("gastown-coordinator"),
			nats.CustomInboxPrefix(schemas.CoordinatorInbox),
			nats.MaxReconnects(-1),
		); err != nil {
			d.Close()
			return nil, errors.WithHint(errors.Wrapf(err, "connecting to %s", redactURL(dc.NatsURL)),
				"check --nats-url (or GASTOWN_NATS_URL) and that the server is reachable")
		}
		d.sc = d.nc
		d.clientURL = redactURL(dc.NatsURL)
		cfg.Logger.Info("using an existing NATS server; its own configuration grants connection permissions", "url", d.clientURL)
	}
	if d.co, err = New(ctx, d.nc, issuer, cfg, opts...); err != nil {
		d.Close()
		return nil, err
	}
	if d.srv != nil {
		if err := d.srv.StartOpsView(ctx); err != nil {
			d.Close()
			return nil, err
		}
	}
	if d.cluster != nil {
		d.cluster.runOpsView(d.co, d.sc)
	}
	if d.http != nil {
		d.http.ready.Store(true)
	}
	cfg.Logger.Info("coordinator ready", "url", d.clientURL)
	return d, nil
}

// ClientURL is the URL containers connect to.
func (d *Daemon) ClientURL() string { return d.clientURL }

// Server is the embedded server, nil on an existing cluster.
func (d *Daemon) Server() *bus.Server { return d.srv }

// Conn is the daemon's own control connection (CoordinatorPermissions on
// the embedded server).
func (d *Daemon) Conn() *nats.Conn { return d.nc }

// StateConn is the connection the daemon reaches JetStream on: the state
// account's on the embedded server, the same as Conn on a cluster.
func (d *Daemon) StateConn() *nats.Conn { return d.sc }

// Failed is closed when the embedded server's JetStream can no longer
// store anything under the running coordinator (a full disk); Err says
// why. Never on an existing cluster.
func (d *Daemon) Failed() <-chan struct{} {
	if d.srv == nil {
		return nil
	}
	return d.srv.Failed()
}

// Err is why Failed was closed, or nil.
func (d *Daemon) Err() error {
	if d.srv == nil {
		return nil
	}
	return d.srv.Err()
}

// Close stops the metrics listener, the coordinator, its connection and
// the embedded server, in that order. Safe to call twice. When JetStream has stopped, the
// connection goes first, so that handlers waiting on state writes that
// can no longer happen fail at once rather than at their deadlines.
func (d *Daemon) Close() {
	d.http.close()
	if d.Err() != nil && d.sc != nil {
		d.nc.Close()
		d.sc.Close()
	}
	if d.co != nil {
		d.co.Close()
	}
	d.cluster.close()
	if d.nc != nil {
		d.nc.Close()
	}
	if d.sc != nil {
		d.sc.Close()
	}
	if d.srv != nil {
		d.srv.Close()
	}
}

// RunDaemon runs the coordinator until ctx is done, then stops everything
// it started and returns.
func RunDaemon(ctx context.Context, issuer *Issuer, dc DaemonConfig) error {
	d, err := StartDaemon(ctx, issuer, dc)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Stopped (Ctrl-C, SIGTERM) while starting: StartDaemon has closed
		// what it had started. That is a clean stop, not a failure.
		if dc.Logger != nil {
			dc.Logger.Info("coordinator stopped while starting")
		}
		return nil
	}
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		if dc.Logger != nil {
			dc.Logger.Info("coordinator stopping")
		}
		d.Close()
		return nil
	case <-d.Failed():
		err := d.Err()
		if dc.Logger != nil {
			dc.Logger.Error("coordinator stopping: its state can no longer be written", KeyErr, err)
		}
		d.Close()
		return err
	}
}

// redactURL drops any password from a NATS URL (or comma-separated list)
// before it is printed.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparseable URL)"
			continue
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}

// MetricsAddr is where /metrics, /healthz and /readyz are served, or ""
// when DaemonConfig.MetricsListen is not set.
func (d *Daemon) MetricsAddr() string {
	if d.http == nil {
		return ""
	}
	return d.http.addr()
}

// Misdirected is how many requests the coordinator dropped because their
// reply subject was not the requester's own inbox (the reply rule).
func (d *Daemon) Misdirected() int64 { return d.co.Misdirected() }

// LeasesHeld is how many towns' leases the daemon's coordinator acts on.
func (d *Daemon) LeasesHeld() int { return d.co.leases.heldCount() }

// HoldsTown reports whether the daemon's coordinator runs town's loops now.
func (d *Daemon) HoldsTown(townID string) bool { return d.co.leases.holds(townID) }
