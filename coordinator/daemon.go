package coordinator

import (
	"context"
	"net/url"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
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
	// Ready, when set, is called once the daemon accepts connections, with
	// the URL containers should use.
	Ready func(clientURL string)
}

// RunDaemon runs the coordinator until ctx is done, then stops every part
// it started, in reverse order, and returns.
func RunDaemon(ctx context.Context, issuer *Issuer, dc DaemonConfig) error {
	cfg, err := dc.Config.withDefaults()
	if err != nil {
		return errors.Wrap(err, "coordinator configuration")
	}
	log := cfg.Logger

	var (
		nc        *nats.Conn
		clientURL string
		store     *revocations
		opts      []Option
	)
	// The revocation cache exists before the server, so the authorizer can
	// refuse every token until the cache is loaded.
	store = newRevocations()
	if dc.NatsURL == "" {
		auth, err := NewConnAuthorizer(issuer, cfg, store)
		if err != nil {
			return err
		}
		bc := dc.Bus
		bc.Tokens = auth
		if bc.Logger == nil {
			bc.Logger = log.With(KeyComponent, "nats")
		}
		srv, err := bus.Start(ctx, bc)
		if err != nil {
			return err
		}
		defer srv.Close()
		if nc, err = srv.Connect("gastown-coordinator"); err != nil {
			return err
		}
		clientURL = srv.ClientURL()
		opts = append(opts, WithKicker(srv))
	} else {
		if nc, err = nats.Connect(dc.NatsURL,
			nats.Name("gastown-coordinator"),
			nats.CustomInboxPrefix(schemas.CoordinatorInbox),
			nats.MaxReconnects(-1),
		); err != nil {
			return errors.WithHint(errors.Wrapf(err, "connecting to %s", redactURL(dc.NatsURL)),
				"check --nats-url and that the server is reachable")
		}
		clientURL = redactURL(dc.NatsURL)
		log.Info("using an existing NATS server; its own configuration grants connection permissions", "url", clientURL)
	}
	defer nc.Close()

	co, err := New(ctx, nc, issuer, cfg, store, opts...)
	if err != nil {
		return err
	}
	defer co.Close()
	if dc.Ready != nil {
		dc.Ready(clientURL)
	}
	log.Info("coordinator ready", "url", clientURL)
	<-ctx.Done()
	log.Info("coordinator stopping")
	return nil
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
