package main

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
)

const coordinatorDesc = `
Runs the coordinator: it signs container tokens and keeps every active town's
token fresh, and answers containers and the administrator over NATS.

By default it runs an embedded NATS server with JetStream (listening on
--listen, storing under --data-dir). With --nats-url and --cluster-creds it
runs on a NATS cluster made by 'gastown cluster init': it answers the
servers' auth callout (containers connect to any node with their token and
get the same permissions as on the embedded server), kicks revoked
connections on every node, and shares the work with the other coordinators
(give it --replicas 3). With --nats-url alone it uses an existing NATS server
whose own configuration grants connection permissions. The data directory is locked while the coordinator runs
(gastown.lock in it): a second coordinator on it is refused.

Bearer tokens and passwords must never cross a network in clear text: on
any address but loopback give --tls-cert and --tls-key (clients then use
tls://host:port and the CA with --tls-ca or GASTOWN_NATS_CA), and with
--tls-ca every client must present a certificate that CA signs. Without TLS
on a network address the coordinator warns loudly at start.

Environment:
  GASTOWN_JWT_SECRET          signing secret, at least 32 bytes (required;
                              make one with: openssl rand -hex 32)
  GASTOWN_JWT_ACCEPT_SECRETS  more secrets whose tokens are still accepted,
                              comma-separated (key rotation)
  GASTOWN_OPS_PASSWORD        enables the read-only 'ops' NATS user
  GASTOWN_ADMIN_PASSWORD      enables the 'admin' NATS user (admin verbs)`

func runCoordinator(ctx context.Context, args []string, env Env) error {
	fs := newFlags("coordinator", "coordinator [flags]", coordinatorDesc, env)
	listen := fs.String("listen", bus.DefaultListen, "host:port the embedded NATS server listens on")
	dataDir := fs.String("data-dir", bus.DefaultDataDir, "directory of the embedded server's JetStream store")
	natsURL := fs.String("nats-url", "", "use this existing NATS server or cluster instead of the embedded one (comma-separated URLs)")
	clusterCreds := fs.String("cluster-creds", "", "with --nats-url: the coordinator's keys for a cluster made by `gastown cluster init` (its coordinator/ directory); the coordinator then answers the cluster's auth callout")
	ttl := fs.Duration("token-ttl", coordinator.DefaultTokenTTL, "lifetime of a container token")
	refresh := fs.Duration("refresh-interval", coordinator.DefaultRefreshInterval, "how often an active town's token is refreshed")
	recovery := fs.Duration("recovery-window", token.DefaultRecoveryWindow, "how long after expiry a container token may still ask for a fresh one")
	replicas := fs.Int("replicas", 1, "replica count of the state buckets (3 on a cluster)")
	heartbeat := fs.Duration("heartbeat-interval", coordinator.DefaultHeartbeatInterval, "how often containers send heartbeats")
	deadAfter := fs.Int("dead-after", coordinator.DefaultDeadAfter, "missed heartbeat intervals before an agent is dead")
	cooldown := fs.Duration("dispatch-cooldown", coordinator.DefaultDispatchCooldown, "wait after a failed dispatch or run")
	attempts := fs.Int("max-attempts", coordinator.DefaultMaxAttempts, "failed dispatches before a bead fails")
	leaseTTL := fs.Duration("lease-ttl", coordinator.DefaultLeaseTTL, "how long a coordinator's lease on a town lasts unless renewed")
	rpcRate := fs.Float64("town-rpc-rate", coordinator.DefaultRPCRate, "tool calls per second each town may make (burst: twice as many)")
	writeRate := fs.Float64("town-write-rate", coordinator.DefaultWriteRate, "tool calls per second each town may make of the methods that write, wait or scan (burst: twice as many)")
	inFlight := fs.Int("town-inflight", coordinator.DefaultWriteInFlight, "such calls of each town that may run at once")
	tokenGetRate := fs.Float64("town-token-get-rate", coordinator.DefaultTokenGetRate, "token.get requests per second each town may make")
	maxBeads := fs.Int("town-max-beads", coordinator.DefaultMaxBeads, "beads (open and closed) each town may keep")
	maxBytes := fs.Int64("town-max-bytes", coordinator.DefaultMaxStoredBytes, "bytes of text all of a town's beads may hold together")
	maxBeadBytes := fs.Int("town-max-bead-bytes", coordinator.DefaultMaxBeadBytes, "bytes of text one bead, mail or checkpoint note may hold")
	tlsCert := fs.String("tls-cert", "", "certificate (PEM) of the embedded server's client port: with --tls-key, clients must connect with TLS (tls://); off by default")
	tlsKey := fs.String("tls-key", "", "private key (PEM) of --tls-cert")
	tlsCA := fs.String("tls-ca", "", "CA file (PEM): clients must present a certificate it signs (mutual TLS); needs --tls-cert")
	tlsTimeout := fs.Duration("tls-timeout", bus.DefaultTLSTimeout, "how long a client's TLS handshake may take")
	monitor := fs.String("monitor-listen", "", "host:port of the embedded server's HTTP monitoring endpoint (/varz, /connz, /subsz, /jsz); off by default, no authentication: keep it on 127.0.0.1")
	townConns := fs.Int("town-conns", bus.DefaultTownConns, "most connections one town may have open at once, on the embedded server or over a whole cluster (its container's, and one per agent tool call)")
	metricsListen := fs.String("metrics-listen", "", "host:port to serve Prometheus /metrics, /healthz and /readyz on (off when empty; e.g. 127.0.0.1:9464)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if done, err := parse(fs, args, env); done {
		return err
	}
	log, err := newLogger(env.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if *natsURL != "" && (*tlsCert != "" || *tlsKey != "" || *tlsCA != "" || *monitor != "") {
		return errors.Mark(errors.WithHint(errors.New("--tls-cert, --tls-key, --tls-ca and --monitor-listen configure the embedded server, and --nats-url replaces it"),
			"configure TLS and monitoring on that NATS cluster, or drop --nats-url"), ErrUsage)
	}
	var creds *cluster.Creds
	if *clusterCreds != "" {
		if *natsURL == "" {
			return errors.Mark(errors.WithHint(errors.New("--cluster-creds needs --nats-url"),
				"give the cluster's client URLs, e.g. --nats-url nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"), ErrUsage)
		}
		if creds, err = cluster.LoadCreds(*clusterCreds); err != nil {
			return err
		}
	}
	ring, err := token.KeyRingFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	if env.Getenv("GASTOWN_DEV_SECRET") == "1" {
		log.Warn("DEVELOPMENT SECRET IN USE: tokens are signed with a well-known key; never run this way in production")
	}
	issuer := token.NewIssuer(ring, time.Now)
	log.Info("starting coordinator", "signingKey", ring.CurrentID(), "acceptedKeys", len(ring.IDs()),
		"tokenTTL", *ttl, "refreshInterval", *refresh)
	return coordinator.RunDaemon(ctx, issuer, coordinator.DaemonConfig{
		Config: coordinator.Config{
			TokenTTL: *ttl, RefreshInterval: *refresh, RecoveryWindow: *recovery,
			Replicas: *replicas, Logger: log,
			HeartbeatInterval: *heartbeat, DeadAfter: *deadAfter, DispatchCooldown: *cooldown,
			MaxAttempts: *attempts, LeaseTTL: *leaseTTL,
			Limits: coordinator.Limits{
				RPCRate: *rpcRate, WriteRate: *writeRate, WriteInFlight: *inFlight, TokenGetRate: *tokenGetRate,
				MaxBeads: *maxBeads, MaxStoredBytes: *maxBytes, MaxBeadBytes: *maxBeadBytes,
			},
		},
		Bus: bus.Config{
			Listen: *listen, DataDir: *dataDir, Owner: "gastown coordinator",
			OpsPassword:   env.Getenv("GASTOWN_OPS_PASSWORD"),
			AdminPassword: env.Getenv("GASTOWN_ADMIN_PASSWORD"),
			Debug:         *logLevel == "debug",
			Limits:        bus.Limits{TownConns: *townConns},
			TLS:           bus.TLS{CertFile: *tlsCert, KeyFile: *tlsKey, CAFile: *tlsCA, Timeout: *tlsTimeout},
			MonitorListen: *monitor,
		},
		NatsURL:       *natsURL,
		Cluster:       creds,
		MetricsListen: *metricsListen,
	})
}
