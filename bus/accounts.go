package bus

import (
	"context"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The embedded server keeps control and state apart in NATS accounts, so
// that no identity that may read state can aim it at a handler, and no
// server-side service publishing on someone's behalf reaches one:
//
//   - The control account (ControlAccount) is where every request handler
//     listens: containers, the administrator and the coordinator's control
//     connection connect here. It has no JetStream.
//   - The state account (the server's global account, where JetStream
//     keeps the store) holds the KV buckets. Only the coordinator's state
//     connection connects here; no handler listens.
//   - The ops account (OpsAccount) is the operator's: read-only mirrors of
//     the state buckets, and the heartbeats and events of every town
//     imported from the control account. Whatever the operator makes
//     JetStream publish (a reply, a consumer's deliveries) lands in this
//     account, where nothing listens but the operator.
const (
	ControlAccount = "GASTOWN"
	OpsAccount     = "GASTOWN_OPS"
	// stateAPIPrefix is how the ops account's mirrors reach the state
	// account's JetStream API: only consumer creation for each bucket.
	stateAPIPrefix = "$JS.gastown_state.API"
	// mirrorDeliver prefixes the subjects the state account's mirror
	// consumers deliver on, imported into the ops account.
	mirrorDeliver = "gastown.mirror"
	// opsConsumerInactive is how long a consumer in the ops account lives
	// unused, durable or not: an operator creates no lasting state. The
	// nats CLI's `stream view` asks for an hour.
	opsConsumerInactive = time.Hour
	// opsMaxConsumers bounds the consumers of each ops mirror.
	opsMaxConsumers = 64
)

// accounts are the server's accounts, once set up.
type accounts struct {
	control, state, ops *server.Account
}

// internal is the user an in-process identity registers as.
func (a *accounts) internal(name string) *server.User {
	switch name {
	case coordinatorUser:
		return &server.User{Username: name, Account: a.control, Permissions: CoordinatorPermissions()}
	case stateUser:
		return &server.User{Username: name, Account: a.state, Permissions: StatePermissions()}
	case mirrorUser:
		return &server.User{Username: name, Account: a.ops}
	}
	return &server.User{Username: name, Account: a.control}
}

// setupAccounts registers the control and ops accounts, their exports and
// imports, and JetStream for the ops account. It runs once the server is
// ready and before any connection is accepted.
func setupAccounts(ns *server.Server) (*accounts, error) {
	a := &accounts{state: ns.GlobalAccount()}
	a.control, _ = ns.LookupOrRegisterAccount(ControlAccount)
	a.ops, _ = ns.LookupOrRegisterAccount(OpsAccount)
	only := []*server.Account{a.ops}
	for _, subject := range []string{schemas.AllTowns.Heartbeat(), schemas.AllTowns.Events()} {
		if err := a.control.AddStreamExport(subject, only); err != nil {
			return nil, errors.Wrapf(err, "exporting %s", subject)
		}
		if err := a.ops.AddStreamImport(a.control, subject, ""); err != nil {
			return nil, errors.Wrapf(err, "importing %s", subject)
		}
	}
	for _, b := range schemas.StateBuckets {
		create := "$JS.API.CONSUMER.CREATE.KV_" + b
		if err := a.state.AddServiceExport(create, only); err != nil {
			return nil, errors.Wrapf(err, "exporting %s", create)
		}
		if err := a.ops.AddServiceImport(a.state, stateAPIPrefix+strings.TrimPrefix(create, "$JS.API"), create); err != nil {
			return nil, errors.Wrapf(err, "importing %s", create)
		}
	}
	// The mirrors' flow-control answers go back to their consumers.
	if err := a.state.AddServiceExport("$JS.FC.>", only); err != nil {
		return nil, errors.Wrap(err, "exporting flow control")
	}
	if err := a.ops.AddServiceImport(a.state, "$JS.FC.>", ""); err != nil {
		return nil, errors.Wrap(err, "importing flow control")
	}
	if err := a.state.AddStreamExport(mirrorDeliver+".>", only); err != nil {
		return nil, errors.Wrap(err, "exporting mirror deliveries")
	}
	if err := a.ops.AddStreamImport(a.state, mirrorDeliver+".>", ""); err != nil {
		return nil, errors.Wrap(err, "importing mirror deliveries")
	}
	if err := a.ops.EnableJetStream(map[string]server.JetStreamAccountLimits{"": {
		MaxMemory: -1, MaxStore: -1, MaxStreams: len(schemas.StateBuckets), MaxConsumers: opsMaxConsumers,
		MaxAckPending: -1, MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1,
	}}, nil); err != nil {
		return nil, errors.Wrap(err, "enabling JetStream for the ops account")
	}
	return a, nil
}

// MirrorState makes (or brings up to date) the ops account's read-only
// mirror of each state bucket that exists, so that the nats CLI, as ops,
// reads them under their own names. The coordinator calls it once its
// buckets exist.
func (s *Server) MirrorState(ctx context.Context) error {
	state, err := s.connectAs(stateUser, "gastown-mirror-source")
	if err != nil {
		return err
	}
	defer state.Close()
	ops, err := s.connectAs(mirrorUser, "gastown-mirror")
	if err != nil {
		return err
	}
	defer ops.Close()
	src, err := jetstream.New(state)
	if err != nil {
		return errors.Wrap(err, "opening the state account's JetStream")
	}
	dst, err := jetstream.New(ops)
	if err != nil {
		return errors.Wrap(err, "opening the ops account's JetStream")
	}
	for _, b := range schemas.StateBuckets {
		name := "KV_" + b
		st, err := src.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return errors.Wrapf(err, "reading stream %s", name)
		}
		if _, err := dst.CreateOrUpdateStream(ctx, mirrorConfig(st.CachedInfo().Config)); err != nil {
			return errors.Wrapf(err, "mirroring %s for ops", name)
		}
	}
	return nil
}

// mirrorConfig is the ops mirror of a state bucket's stream: the same name
// and limits, fed from the state account, answering direct gets itself.
func mirrorConfig(origin jetstream.StreamConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              origin.Name,
		Description:       "read-only mirror of the state bucket, for operators",
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: origin.MaxMsgsPerSubject,
		MaxBytes:          origin.MaxBytes,
		MaxAge:            origin.MaxAge,
		MaxMsgSize:        origin.MaxMsgSize,
		Discard:           origin.Discard,
		Storage:           jetstream.FileStorage,
		Replicas:          origin.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
		AllowMsgTTL:       origin.AllowMsgTTL,
		Mirror: &jetstream.StreamSource{
			Name:     origin.Name,
			External: &jetstream.ExternalStream{APIPrefix: stateAPIPrefix, DeliverPrefix: mirrorDeliver},
		},
		ConsumerLimits: jetstream.StreamConsumerLimits{InactiveThreshold: opsConsumerInactive},
	}
}

// connectAs opens an in-process connection as one of the internal
// identities.
func (s *Server) connectAs(user, name string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{
		nats.Name(name),
		nats.InProcessServer(s.ns),
		nats.UserInfo(user, s.internalSecret),
		nats.CustomInboxPrefix(schemas.CoordinatorInbox),
		nats.MaxReconnects(-1),
	}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, errors.Wrapf(err, "connecting in-process to the embedded NATS server as %s", user)
	}
	return nc, nil
}
