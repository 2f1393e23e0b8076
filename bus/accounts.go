package bus

import (
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
//   - The ops account (OpsAccount) is the operator's: copies of the state
//     buckets, which the server itself keeps (opsview.go), and the
//     heartbeats and events of every town imported from the control
//     account. Nothing joins its JetStream to the state account's (no
//     mirror, no import of any JetStream subject): whatever the operator
//     makes JetStream publish (a reply, a consumer's deliveries, an API
//     answer) lands in this account, where nothing listens but the
//     operator, and at worst scribbles on the operator's own copy, which
//     the server restores.
const (
	ControlAccount = "GASTOWN"
	OpsAccount     = "GASTOWN_OPS"
	// opsConsumerInactive is how long a consumer in the ops account lives
	// unused, durable or not: an operator creates no lasting state. The
	// nats CLI's `stream view` asks for an hour.
	opsConsumerInactive = time.Hour
	// opsMaxConsumers bounds the consumers of each ops copy.
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
	case opsCopyUser:
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
	if err := a.ops.EnableJetStream(map[string]server.JetStreamAccountLimits{"": {
		MaxMemory: -1, MaxStore: -1, MaxStreams: len(opsBuckets), MaxConsumers: opsMaxConsumers,
		MaxAckPending: -1, MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1,
	}}, nil); err != nil {
		return nil, errors.Wrap(err, "enabling JetStream for the ops account")
	}
	return a, nil
}

// closeGone closes an in-process connection and waits (briefly) until the
// server has let go of it too, so that its client count is exact again.
func (s *Server) closeGone(nc *nats.Conn) {
	id, err := nc.GetClientID()
	nc.Close()
	if err != nil {
		return
	}
	deadline := time.Now().Add(time.Second)
	for s.ns.GetClient(id) != nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
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
