package schemas

import (
	"strings"

	"github.com/cockroachdb/errors"
)

// Subject roots. Every town subject lives under TownRoot.<townId>.
const (
	TownRoot  = "gastown.town"
	AdminRoot = "gastown.admin"
	// InboxRoot is the root of every container's inbox: _INBOX.gastown.<townId>.
	InboxRoot = "_INBOX.gastown"
	// AdminInbox is the inbox prefix of admin connections. It is not under
	// InboxRoot, so no town id can name it.
	AdminInbox = "_INBOX.gastown_admin"
	// CoordinatorInbox is the inbox prefix of the coordinator's connections.
	CoordinatorInbox = "_INBOX.gastown_coordinator"
)

// Queue groups (PROTOCOL.md, Connecting).
const (
	// ContainerQueue is the queue group of a container's subscriptions, so a
	// message is handled once while two of its connections overlap.
	ContainerQueue = "container"
	// CoordinatorQueue is the queue group of the coordinator's request
	// handlers, so any one of several coordinators answers.
	CoordinatorQueue = "coordinator"
)

// Subject leaves under a town.
const (
	leafToken     = "token"
	leafTokenGet  = "token.get"
	leafDispatch  = "dispatch"
	leafControl   = "control"
	leafHeartbeat = "heartbeat"
	leafRPC       = "rpc"
	leafEvents    = "events"
)

// Town builds the subjects of one town. Its zero value is not useful: get one
// from ForTown, which validates the id, so every subject it builds is safe.
type Town struct{ id, prefix string }

// ForTown validates townID and returns its subject builder.
func ForTown(townID string) (Town, error) {
	if err := ValidateID("townId", townID); err != nil {
		return Town{}, err
	}
	return Town{id: townID, prefix: TownRoot + "." + townID + "."}, nil
}

// ID is the town's id.
func (t Town) ID() string { return t.id }

// Token is where the coordinator pushes a TokenRotation to the container.
func (t Town) Token() string { return t.prefix + leafToken }

// TokenGet is where a container asks for a fresh token.
func (t Town) TokenGet() string { return t.prefix + leafTokenGet }

// Dispatch is where the coordinator asks the container to start an agent.
func (t Town) Dispatch() string { return t.prefix + leafDispatch }

// ControlStop is where the coordinator asks the container to stop an agent.
func (t Town) ControlStop() string { return t.prefix + leafControl + ".stop" }

// Control matches every control subject of the town.
func (t Town) Control() string { return t.prefix + leafControl + ".>" }

// Heartbeat is where the container publishes its heartbeats.
func (t Town) Heartbeat() string { return t.prefix + leafHeartbeat }

// RPC is the subject of one tool method. method is a dotted name such as
// "bead.get"; each of its parts must be a valid identifier.
func (t Town) RPC(method string) (string, error) {
	if err := ValidateMethod(method); err != nil {
		return "", err
	}
	return t.prefix + leafRPC + "." + method, nil
}

// RPCAll matches every RPC subject of the town.
func (t Town) RPCAll() string { return t.prefix + leafRPC + ".>" }

// Events is where the coordinator publishes the town's TownEvents.
func (t Town) Events() string { return t.prefix + leafEvents }

// Inbox is the inbox prefix of the town's connections.
func (t Town) Inbox() string { return InboxRoot + "." + t.id }

// AllTowns is a subject builder whose town token is the wildcard "*", for
// subscribers that watch every town (operators, the coordinator).
var AllTowns = Town{id: "*", prefix: TownRoot + ".*."}

// Admin is the subject of one administration method.
func Admin(method string) (string, error) {
	if err := ValidateMethod(method); err != nil {
		return "", err
	}
	return AdminRoot + "." + method, nil
}

// AdminAll matches every administration subject.
const AdminAll = AdminRoot + ".>"

// ValidateMethod checks an RPC or admin method name: one or more identifiers
// joined by dots, e.g. "token.mint".
func ValidateMethod(method string) error {
	if method == "" {
		return errors.Mark(errors.New("method is required"), ErrInvalidID)
	}
	for _, part := range strings.Split(method, ".") {
		if err := ValidateID("method part", part); err != nil {
			return errors.Wrapf(err, "method %q", method)
		}
	}
	return nil
}

// ParseTownSubject splits a subject under TownRoot into its town id and the
// rest, e.g. "gastown.town.A.rpc.bead.get" → ("A", "rpc.bead.get").
func ParseTownSubject(subject string) (townID, rest string, err error) {
	s, ok := strings.CutPrefix(subject, TownRoot+".")
	if !ok {
		return "", "", errors.Mark(errors.Newf("subject %q is not under %s", subject, TownRoot), ErrInvalidID)
	}
	townID, rest, ok = strings.Cut(s, ".")
	if !ok || rest == "" {
		return "", "", errors.Mark(errors.Newf("subject %q names no leaf under its town", subject), ErrInvalidID)
	}
	if err := ValidateID("townId", townID); err != nil {
		return "", "", err
	}
	return townID, rest, nil
}
