package bus

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// ClusterKicker closes a town's connections on every server of a cluster:
// it asks each server, through the system account, for the control
// account's connections (CONNZ), picks the town's by the names the
// callout gave them (issuedAtMark), and has the server holding each one close it
// (KICK). A connection that passed the callout just before the revocation
// was saved may register after the first sweep, so the town is swept again
// once the callout's timeout has passed.
type ClusterKicker struct {
	sys *nats.Conn
	log *slog.Logger
	// again is how long after a kick the town is swept a second time.
	again time.Duration
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// DefaultKickAgain is the second sweep's delay: the servers' callout
// timeout (2 s in the generated configuration) and a second of margin.
const DefaultKickAgain = 3 * time.Second

// kickWait bounds how long a sweep waits for the servers' answers.
const kickWait = time.Second

// NewClusterKicker kicks through sys, a connection to the system account.
func NewClusterKicker(sys *nats.Conn, log *slog.Logger) *ClusterKicker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ClusterKicker{sys: sys, log: log, again: DefaultKickAgain, stop: make(chan struct{})}
}

// Kick closes every connection of townID whose token was issued before
// issuedBefore, on every server, and returns how many it closed now; a
// second sweep follows in the background.
func (k *ClusterKicker) Kick(townID string, issuedBefore time.Time) int {
	n, err := k.sweep(townID, issuedBefore)
	if err != nil {
		k.log.Warn("could not close every connection using revoked tokens", KeyTown, townID, KeyErr, err)
	}
	k.wg.Go(func() {
		select {
		case <-k.stop:
			return
		case <-time.After(k.again):
		}
		if m, err := k.sweep(townID, issuedBefore); err != nil {
			k.log.Warn("could not close every connection using revoked tokens", KeyTown, townID, KeyErr, err)
		} else if m > 0 {
			k.log.Info("closed connections using revoked tokens that registered late", KeyTown, townID, "count", m)
		}
	})
	return n
}

// KickLater sweeps the town once, after the second sweep's delay, in the
// background. Every coordinator calls it when its watch of the tokens
// bucket first sees a town's newer revocation (red-team finding, see
// attack/cluster_test.go): the coordinator that saved the revocation may
// have died before its own sweeps, and this coordinator's callout may
// have admitted an old token before its cache saw the revocation. (A
// node cut off during every sweep is swept again only by a coordinator
// connected to it, when its watch catches up.) The delay lets any such connection
// register, and the revoking coordinator's own sweeps count first.
func (k *ClusterKicker) KickLater(townID string, issuedBefore time.Time) {
	k.wg.Go(func() {
		select {
		case <-k.stop:
			return
		case <-time.After(k.again):
		}
		if n, err := k.sweep(townID, issuedBefore); err != nil {
			k.log.Warn("could not close every connection using revoked tokens", KeyTown, townID, KeyErr, err)
		} else if n > 0 {
			k.log.Info("closed connections using revoked tokens that another coordinator left", KeyTown, townID, "count", n)
		}
	})
}

// Close stops the pending second sweeps and waits for them.
func (k *ClusterKicker) Close() {
	k.once.Do(func() { close(k.stop) })
	k.wg.Wait()
}

type connzReply struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data struct {
		Total int `json:"total"`
		Conns []struct {
			CID  uint64 `json:"cid"`
			User string `json:"authorized_user"`
		} `json:"connections"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// connzPage is how many connections one CONNZ answer lists.
const connzPage = 4096

// sweep kicks what it finds now of one town.
func (k *ClusterKicker) sweep(townID string, before time.Time) (int, error) {
	return k.sweepRevoked(map[string]time.Time{townID: before})
}

// SweepRevoked closes, in one pass over every server's connections, each
// connection of a town in revoked whose token was issued before the
// town's time there, and returns how many it closed. The coordinators run
// it every so often (one of them): it finds a revoked connection that no
// kick reached, such as one on a node cut off from the others while the
// town was revoked.
func (k *ClusterKicker) SweepRevoked(revoked map[string]time.Time) (int, error) {
	if len(revoked) == 0 {
		return 0, nil
	}
	return k.sweepRevoked(revoked)
}

func (k *ClusterKicker) sweepRevoked(revoked map[string]time.Time) (int, error) {
	targets := map[string][]townConn{}
	pages, err := listConns(k.sys)
	if err != nil {
		return 0, err
	}
	for _, p := range pages {
		collect(p, revoked, targets)
	}
	n := 0
	for srv, conns := range targets {
		for _, tc := range conns {
			townID, cid := tc.town, tc.cid
			body, _ := json.Marshal(map[string]uint64{"cid": cid})
			m, err := k.sys.Request("$SYS.REQ.SERVER."+srv+".KICK", body, kickWait)
			if err != nil {
				k.log.Warn("a server did not close a connection using a revoked token", KeyTown, townID, KeyErr, err)
				continue
			}
			var r struct {
				Error *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if json.Unmarshal(m.Data, &r) == nil && r.Error == nil {
				n++
			}
		}
	}
	if n > 0 {
		k.log.Info("closed connections using revoked tokens", "count", n, "towns", len(revoked))
	}
	return n, nil
}

// townConn is one connection to close: its town, its id on its server.
type townConn struct {
	town string
	cid  uint64
}

func collect(p connzReply, revoked map[string]time.Time, into map[string][]townConn) {
	for _, c := range p.Data.Conns {
		town, iat, ok := townConnOf(c.User)
		if before, revokedTown := revoked[town]; ok && revokedTown && iat < before.UnixNano() {
			into[p.Server.ID] = append(into[p.Server.ID], townConn{town: town, cid: c.CID})
		}
	}
}

// townConnOf reads the town and the token's iat of a container connection
// from the name the callout gave it: "town:<id>;iat=<ns>" or
// "recovery:<id>;iat=<ns>".
func townConnOf(name string) (town string, iat int64, ok bool) {
	rest, ok := strings.CutPrefix(name, "town:")
	if !ok {
		if rest, ok = strings.CutPrefix(name, "recovery:"); !ok {
			return "", 0, false
		}
	}
	id, at, ok := strings.Cut(rest, issuedAtMark)
	if !ok {
		return "", 0, false
	}
	v, err := strconv.ParseInt(at, 10, 64)
	return id, v, err == nil
}

func connzBody(offset int) []byte {
	b, _ := json.Marshal(map[string]any{"acc": ControlAccount, "auth": true, "limit": connzPage, "offset": offset})
	return b
}

// pingAll asks every server of the cluster, through the system account,
// collecting answers until expect have come (the servers the connection
// knows of) and then none for a moment, or kickWait has passed: a
// server slow to answer (loaded) is still waited for.
func pingAll(sys *nats.Conn, subject string, body []byte, expect int) ([]*nats.Msg, error) {
	inbox := sys.NewInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := sys.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sys.PublishRequest(subject, inbox, body); err != nil {
		return nil, err
	}
	var out []*nats.Msg
	deadline := time.NewTimer(kickWait)
	defer deadline.Stop()
	quiet := time.NewTimer(kickWait)
	defer quiet.Stop()
	for {
		select {
		case m := <-ch:
			out = append(out, m)
			if len(out) >= expect {
				quiet.Reset(200 * time.Millisecond)
			}
		case <-quiet.C:
			return out, nil
		case <-deadline.C:
			return out, nil
		}
	}
}

// JetStreamServers is how many servers JetStream's meta group has (the
// peers it knows, up or down: a cluster with a node down still has the
// nodes to hold its replicas), asking through sys, a connection to the
// system account. A lone server with JetStream counts 1.
func JetStreamServers(sys *nats.Conn) (int, error) {
	msgs, err := pingAll(sys, "$SYS.REQ.SERVER.PING.JSZ", nil, len(sys.Servers()))
	if err != nil {
		return 0, errors.Wrap(err, "asking the servers about JetStream")
	}
	n := 0
	for _, m := range msgs {
		var r struct {
			Server struct {
				JetStream bool `json:"jetstream"`
			} `json:"server"`
			Data struct {
				Meta *struct {
					Size int `json:"cluster_size"`
				} `json:"meta_cluster"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &r) != nil || !r.Server.JetStream {
			continue
		}
		size := 1
		if r.Data.Meta != nil && r.Data.Meta.Size > 0 {
			size = r.Data.Meta.Size
		}
		n = max(n, size)
	}
	return n, nil
}

// listConns asks every server of the cluster, through sys, for the
// control account's connections (CONNZ), every page of them: the kicker
// picks revoked ones from them, the town cap counts them
// (clustercount.go). A server that did not answer is not in them.
func listConns(sys *nats.Conn) ([]connzReply, error) {
	msgs, err := pingAll(sys, "$SYS.REQ.SERVER.PING.CONNZ", connzBody(0), len(sys.Servers()))
	if err != nil {
		return nil, errors.Wrap(err, "asking the servers for connections")
	}
	var out []connzReply
	for _, m := range msgs {
		var p connzReply
		if err := json.Unmarshal(m.Data, &p); err != nil || p.Error != nil || p.Server.ID == "" {
			continue
		}
		out = append(out, p)
		// A server with more connections than one page: ask it for the rest.
		for off := len(p.Data.Conns); off < p.Data.Total; off += connzPage {
			more, err := ask(sys, "$SYS.REQ.SERVER."+p.Server.ID+".CONNZ", off)
			if err != nil {
				return nil, err
			}
			more.Server.ID = p.Server.ID
			out = append(out, more)
		}
	}
	return out, nil
}

func ask(sys *nats.Conn, subject string, offset int) (connzReply, error) {
	var r connzReply
	m, err := sys.Request(subject, connzBody(offset), kickWait)
	if err != nil {
		return r, errors.Wrap(err, "asking a server for its connections")
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return r, errors.Wrap(err, "reading a server's connections")
	}
	return r, nil
}
