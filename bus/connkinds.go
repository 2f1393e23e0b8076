package bus

import (
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// Kinds of client connection, the keys of ConnectionsByKind.
const (
	ConnContainer = "container"
	ConnRecovery  = "recovery"
	ConnOps       = "ops"
	ConnAdmin     = "admin"
	// ConnInternal is the process's own: the coordinator's control and
	// state connections, the ops copier's and any in-process tool's.
	ConnInternal = "internal"
)

// ConnKinds lists the kinds of ConnectionsByKind in a fixed order.
var ConnKinds = []string{ConnContainer, ConnRecovery, ConnOps, ConnAdmin, ConnInternal}

// ConnectionsByKind counts the open client connections by kind (the Conn
// constants), for metrics and status. It asks the server at each call, so
// the counts are exact; it costs a pass over every connection, which is
// for a scrape, not a hot path.
func (s *Server) ConnectionsByKind() map[string]int {
	out := make(map[string]int, len(ConnKinds))
	for _, k := range ConnKinds {
		out[k] = 0
	}
	cz, err := s.ns.Connz(&server.ConnzOptions{Username: true, State: server.ConnOpen, Limit: s.ns.NumClients() + 64})
	if err != nil {
		return out
	}
	for _, ci := range cz.Conns {
		out[connKind(ci.AuthorizedUser)]++
	}
	return out
}

// connKind maps the user a connection registered as (Check) to its kind.
func connKind(user string) string {
	switch {
	case strings.HasPrefix(user, "town:"):
		return ConnContainer
	case strings.HasPrefix(user, "recovery:"):
		return ConnRecovery
	case user == OpsUser:
		return ConnOps
	case user == AdminUser:
		return ConnAdmin
	}
	return ConnInternal
}
