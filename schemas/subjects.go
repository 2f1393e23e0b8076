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
	// OpsInbox is the inbox prefix of operator connections (the nats CLI's
	// --inbox-prefix); it is the only inbox they may hear.
	OpsInbox = "_INBOX.gastown_ops"
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
	// leafHolderRPC is the RPC subjects of the town's lease holder: the
	// same methods, answered by the one coordinator that runs the town's
	// loops (PROTOCOL.md, RPC).
	leafHolderRPC = "holder.rpc"
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

// HolderRPC is the subject of one tool method at the town's lease holder:
// the coordinator that holds the town's lease subscribes it, so a town's
// requests go to one coordinator (across one route on a cluster) instead
// of being spread over every coordinator's queue group. A request there
// that finds no responder is sent to RPC(method) (PROTOCOL.md, RPC).
func (t Town) HolderRPC(method string) (string, error) {
	if err := ValidateMethod(method); err != nil {
		return "", err
	}
	return t.prefix + leafHolderRPC + "." + method, nil
}

// HolderRPCAll matches every HolderRPC subject of the town.
func (t Town) HolderRPCAll() string { return t.prefix + leafHolderRPC + ".>" }

// RPCMethod is the method of the rest of an RPC subject as
// ParseTownSubject returns it: "rpc.bead.get" and "holder.rpc.bead.get"
// are both "bead.get". ok is false for any other leaf.
func RPCMethod(rest string) (method string, ok bool) {
	if m, ok := strings.CutPrefix(rest, leafRPC+"."); ok {
		return m, true
	}
	return strings.CutPrefix(rest, leafHolderRPC+".")
}

// Events is where the coordinator publishes the town's TownEvents.
func (t Town) Events() string { return t.prefix + leafEvents }

// Inbox is the inbox prefix of the town's connections.
func (t Town) Inbox() string { return InboxRoot + "." + t.id }

// OwnsReply reports whether reply is an inbox of the town's own
// connections (see ReplyOfTown).
func (t Town) OwnsReply(reply string) bool { return ReplyOfTown(t.id, reply) }

// ReplyOfTown reports whether reply is an inbox of townID's connections:
// _INBOX.gastown.<townId> followed by one or more literal tokens. The reply
// rule (PROTOCOL.md): the coordinator answers a town's request only there.
func ReplyOfTown(townID, reply string) bool {
	rest, ok := strings.CutPrefix(reply, InboxRoot)
	if !ok || len(rest) < 2 || rest[0] != '.' {
		return false
	}
	rest, ok = strings.CutPrefix(rest[1:], townID)
	return ok && townID != "" && literalTail(rest)
}

// IsAdminReply reports whether reply is an inbox of the administrator's
// connections (_INBOX.gastown_admin followed by one or more literal
// tokens): the only place an admin request is answered.
func IsAdminReply(reply string) bool {
	rest, ok := strings.CutPrefix(reply, AdminInbox)
	return ok && literalTail(rest)
}

// literalTail reports whether s is "." followed by one or more literal
// tokens: no wildcard, no empty token, no white space.
func literalTail(s string) bool {
	if len(s) < 2 || s[0] != '.' {
		return false
	}
	s = s[1:]
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if c := s[i]; c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				return false
			}
			continue
		}
		if tok := s[start:i]; tok == "" || tok == "*" || tok == ">" {
			return false
		}
		start = i + 1
	}
	return true
}

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
	// The parts one by one, without a slice of them: every tool call
	// checks its method.
	for rest, more := method, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ".")
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
