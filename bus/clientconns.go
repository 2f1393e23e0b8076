package bus

import (
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats-server/v2/server"
)

// ClientConn is one connection from outside the process (a container, an
// agent, an operator), open or closed, as the embedded server saw it.
type ClientConn struct {
	ID    uint64
	Name  string
	Start time.Time
	// Stop is when it closed; zero while it is open.
	Stop time.Time
	// Reason is why it closed, in the server's words: "Client Closed" when
	// the client closed it, "Authentication Expired" when the server did at
	// its token's exp, "Kicked" when a revocation closed it.
	Reason string
}

// ClosedByClient is the Reason of a connection its client closed.
const ClosedByClient = "Client Closed"

// clientConnsLimit bounds what ClientConns reports.
const clientConnsLimit = 100_000

// ClientConns lists the server's connections from outside the process,
// the open ones and the closed ones it remembers (the newest 10,000), for
// conformance checks and status. It never reports a token.
func (s *Server) ClientConns() ([]ClientConn, error) {
	z, err := s.ns.Connz(&server.ConnzOptions{State: server.ConnAll, Limit: clientConnsLimit})
	if err != nil {
		return nil, errors.Wrap(err, "listing connections")
	}
	out := make([]ClientConn, 0, len(z.Conns))
	for _, c := range z.Conns {
		if c.IP == "" || c.IP == "pipe" { // in-process
			continue
		}
		cc := ClientConn{ID: c.Cid, Name: c.Name, Start: c.Start, Reason: c.Reason}
		if c.Stop != nil {
			cc.Stop = *c.Stop
		}
		out = append(out, cc)
	}
	return out, nil
}
