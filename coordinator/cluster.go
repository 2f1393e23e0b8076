package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// On a NATS cluster (DaemonConfig.Cluster) the coordinator connects as
// five identities, one per account of the isolation model, each with its
// own key: control (handlers, pushes), state (JetStream), auth (answers
// the servers' auth callout: the one authorizer's cluster adapter), system
// (CONNZ and KICK, for revocation) and ops-copy (the operators' copies,
// written by whichever coordinator holds the ops view's lease). Several
// coordinators share the work: handlers in queue groups, each town's
// loops on the holder of its lease.

// ErrClusterConfig marks a coordinator whose credentials or settings do not
// match the cluster it was pointed at.
var ErrClusterConfig = errors.New("the coordinator does not match the cluster")

// clusterSide is what the daemon runs on a cluster, besides the
// coordinator itself.
type clusterSide struct {
	auth, system, opsConn *nats.Conn
	callout               *bus.Callout
	kicker                *bus.ClusterKicker
	stop                  chan struct{}
	wg                    sync.WaitGroup
	log                   interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
	opsMu   sync.Mutex
	opsCopy *bus.OpsCopy
}

// connectKey connects to the cluster as one of the coordinator's keys.
func connectKey(url, name, file string, kp nkeys.KeyPair, opts ...nats.Option) (*nats.Conn, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, errors.Wrapf(err, "reading %s", file)
	}
	all := append([]nats.Option{
		nats.Name(name), nats.Nkey(pub, kp.Sign), nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(false),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, errors.WithHint(errors.Mark(errors.Wrapf(err, "connecting to %s with the coordinator's key %s (%s)", redactURL(url), file, pub), ErrClusterConfig),
			"check that the servers were configured from the same `gastown cluster init` directory as --cluster-creds, and that this key is in auth_callout.auth_users (`gastown cluster check --dir D`)")
	}
	return nc, nil
}

// startCluster connects the coordinator's identities, checks the cluster
// against its settings, and starts the callout and the kicker. It returns
// the options for New.
func (d *Daemon) startCluster(ctx context.Context, cfg Config, dc DaemonConfig, issuer *token.Issuer, tokens *tokenStore) ([]Option, error) {
	creds, url := dc.Cluster, dc.NatsURL
	inbox := nats.CustomInboxPrefix(schemas.CoordinatorInbox)
	cs := &clusterSide{stop: make(chan struct{}), log: cfg.Logger}
	d.cluster = cs
	var err error
	if cs.auth, err = connectKey(url, "gastown-coordinator-auth", "auth.nk", creds.Auth); err != nil {
		return nil, err
	}
	if cs.system, err = connectKey(url, "gastown-coordinator-system", "system.nk", creds.System); err != nil {
		return nil, err
	}
	if cfg.Replicas > 1 {
		n, err := bus.JetStreamServers(cs.system)
		if err != nil {
			return nil, err
		}
		if n < cfg.Replicas {
			return nil, errors.WithHint(errors.Mark(errors.Newf("--replicas %d needs at least %d servers with JetStream, and the cluster has %d", cfg.Replicas, cfg.Replicas, n), ErrClusterConfig),
				"start the missing nodes (every node of `gastown cluster init` runs JetStream), or lower --replicas")
		}
	}
	auth, err := token.NewConnAuthorizer(issuer, cfg.authConfig(), tokens)
	if err != nil {
		return nil, err
	}
	if cs.callout, err = bus.StartCallout(cs.auth, bus.CalloutConfig{
		Tokens: auth, AdminPassword: dc.Bus.AdminPassword, OpsPassword: dc.Bus.OpsPassword,
		Issuer: creds.Issuer, XKey: creds.XKey, Logger: cfg.Logger.With(KeyComponent, "auth"), Limits: dc.Bus.Limits,
		System: cs.system,
	}); err != nil {
		return nil, err
	}
	if d.metrics != nil {
		d.metrics.reg.MustRegister(&calloutCollector{c: cs.callout})
	}
	probeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cs.callout.Probe(probeCtx, url); err != nil {
		return nil, errors.Mark(err, ErrClusterConfig)
	}
	if d.nc, err = connectKey(url, "gastown-coordinator", "control.nk", creds.Control, inbox); err != nil {
		return nil, err
	}
	if d.sc, err = connectKey(url, "gastown-coordinator-state", "state.nk", creds.State, inbox); err != nil {
		return nil, err
	}
	if cs.opsConn, err = connectKey(url, "gastown-ops-copy", "ops-copy.nk", creds.OpsCopy); err != nil {
		return nil, err
	}
	cs.kicker = bus.NewClusterKicker(cs.system, cfg.Logger.With(KeyComponent, "kick"))
	d.clientURL = redactURL(url)
	return []Option{WithKicker(cs.kicker), WithStateConn(d.sc)}, nil
}

// opsViewEvery is how often a coordinator checks whether it holds the ops
// view's lease, to start or stop copying.
const opsViewEvery = time.Second

// revokedSweepEvery is how often the holder of the ops view's lease
// sweeps every node for connections of revoked tokens that no kick
// reached (a node cut off while its town was revoked, say).
const revokedSweepEvery = 10 * time.Second

// runOpsView copies the state for operators while this coordinator holds
// the ops view's lease, and sweeps for revoked connections every
// revokedSweepEvery, until the daemon closes.
func (cs *clusterSide) runOpsView(co *Coordinator, state *nats.Conn) {
	cs.wg.Go(func() {
		t := time.NewTicker(opsViewEvery)
		defer t.Stop()
		lastSweep := time.Now()
		for {
			holds := co.leases.holdsKey(leaseOpsView)
			if holds && time.Since(lastSweep) >= revokedSweepEvery {
				lastSweep = time.Now()
				if _, err := cs.kicker.SweepRevoked(co.liveRevocations()); err != nil {
					cs.log.Warn("could not sweep for connections using revoked tokens", KeyErr, err)
				}
			}
			cs.opsMu.Lock()
			switch {
			case holds && cs.opsCopy == nil:
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				oc, err := bus.StartOpsCopy(ctx, state, cs.opsConn, nil)
				cancel()
				if err != nil {
					cs.log.Warn("could not copy the state for operators", KeyErr, err)
				} else {
					cs.opsCopy = oc
					cs.log.Info("copying the state for operators")
				}
			case !holds && cs.opsCopy != nil:
				cs.opsCopy.Close()
				cs.opsCopy = nil
			}
			cs.opsMu.Unlock()
			select {
			case <-cs.stop:
				return
			case <-t.C:
			}
		}
	})
}

// close stops the copier, the callout and the kicker, and closes the
// connections it opened (the daemon closes control and state).
func (cs *clusterSide) close() {
	if cs == nil {
		return
	}
	select {
	case <-cs.stop:
	default:
		close(cs.stop)
	}
	cs.wg.Wait()
	cs.opsMu.Lock()
	if cs.opsCopy != nil {
		cs.opsCopy.Close()
		cs.opsCopy = nil
	}
	cs.opsMu.Unlock()
	if cs.callout != nil {
		cs.callout.Close()
	}
	if cs.kicker != nil {
		cs.kicker.Close()
	}
	for _, nc := range []*nats.Conn{cs.auth, cs.system, cs.opsConn} {
		if nc != nil {
			nc.Close()
		}
	}
}

// liveRevocations are the towns whose revocation may still have live
// connections: revoked less than a token's lifetime ago (a connection
// closes at its token's exp, and a revoked token gets no recovery grant).
func (c *Coordinator) liveRevocations() map[string]time.Time {
	since := c.now().Add(-c.cfg.TokenTTL)
	out := map[string]time.Time{}
	for _, t := range c.tokens.snapshot() {
		if t.RevokedBefore.After(since) {
			out[t.TownID] = t.RevokedBefore
		}
	}
	return out
}
