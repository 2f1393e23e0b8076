package bus

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// The town cap (Limits.TownConns) on a cluster. The servers hold the
// connections, so every coordinator counts each town's live connections
// on every node from the system account's events: a server announces
// each connection of the control account ($SYS.ACCOUNT.GASTOWN.CONNECT)
// and its close (…DISCONNECT), with the name the callout gave it
// (town:<id>;iat=<ns>, or recovery:…). The count is seeded from CONNZ
// (listConns, the kicker's) at start and reconciled with it every
// TownConnsReconcile; a server that does not answer two reconciles in a
// row is taken for dead and its connections are dropped (a node that dies
// announces no closes). A grant the coordinator made itself counts from
// the moment it is made until its CONNECT event arrives (or grantGrace
// passes: the server did not register it), and it tells the other
// coordinators at once (GrantsSubject, in the callout's account, before
// it answers the server), so that they count it too: the servers'
// events come later, after the server registers the connection and
// through its event queue, and a container connecting again at once
// would otherwise find another coordinator that had not heard of it.
//
// The bound: connects decided one after another, by any coordinators,
// hold the town to TownConns: a grant is told before it is answered, so
// its note is ahead of the container's next connect by the whole round
// of the connect (unless a route delays it by more than that).
// Coordinators deciding at the same moment do not see each other's
// grants until they are told (a route's delay), so a burst of connects
// spread over K coordinators may reach K × TownConns for that moment;
// every connect after is refused until the town is back under the cap.
// Nothing is closed for being over.

// DefaultTownConnsReconcile is how often a coordinator reconciles its
// count of the towns' connections with the servers' CONNZ on a cluster.
const DefaultTownConnsReconcile = 5 * time.Second

// grantGrace is how long a grant counts before its CONNECT event: the
// servers' callout timeout (2 s in the generated configuration, from
// before the request reached the callout), then a second for the event
// to arrive. Past it the server has refused the connection (too late),
// or the client gave up.
const grantGrace = 3 * time.Second

// GrantsSubject is where, in the callout's account, every coordinator
// tells the others of each container connection it lets in, and hears
// theirs (clustercount.go).
const GrantsSubject = "gastown.callout.granted"

// grantNote is a coordinator's note of a grant on GrantsSubject.
type grantNote struct {
	// From is the telling callout's id, so that it skips its own.
	From string `json:"from"`
	Town string `json:"town"`
	Name string `json:"name"`
}

// reconcileMisses is how many reconciles in a row a server may miss
// before its connections are dropped.
const reconcileMisses = 2

// clusterConns counts the towns' connections on every server of a cluster.
type clusterConns struct {
	sys   *nats.Conn
	auth  *nats.Conn // tells and hears grants (GrantsSubject)
	id    string     // this callout's, in its grant notes
	limit int
	every time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu      sync.Mutex
	servers map[string]*serverConns   // by server id
	towns   map[string]int            // live connections by town, over all servers
	pending map[string][]pendingGrant // this coordinator's grants not yet announced, by town
	// replay holds the events that arrived since a reconcile asked for
	// CONNZ, applied again over its answers; nil when none runs.
	replay []connEvent
	// gone are the connections announced closed lately: a server
	// announces a close a moment before it stops listing the connection
	// in CONNZ, so a reconcile may see one that is gone. Connection ids
	// are never reused by a server. Kept for goneFor.
	gone map[connKey]time.Time
	// early are the connections announced by a server before the
	// coordinator that granted them told of the grant, by name: the note
	// that follows adds nothing. Kept for grantGrace.
	early map[string][]time.Time

	subs []*nats.Subscription
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// serverConns is one server's town connections: name by connection id.
type serverConns struct {
	conns  map[uint64]string
	missed int // reconciles in a row it did not answer
}

type connKey struct {
	server string
	cid    uint64
}

type pendingGrant struct {
	name string
	at   time.Time
}

type connEvent struct {
	connect bool
	server  string
	cid     uint64
	name    string
}

// connEventMsg is what the servers' CONNECT and DISCONNECT events say.
type connEventMsg struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Client struct {
		ID   uint64 `json:"id"`
		User string `json:"user"`
	} `json:"client"`
}

// startClusterConns subscribes sys (the system account) to the control
// account's connection events and auth (the callout's account) to the
// other coordinators' grants, seeds the count from CONNZ, and reconciles
// it every every until close.
func startClusterConns(sys, auth *nats.Conn, limit int, every time.Duration, now func() time.Time, log *slog.Logger) (*clusterConns, error) {
	if every <= 0 {
		every = DefaultTownConnsReconcile
	}
	id, err := randomSecret()
	if err != nil {
		return nil, err
	}
	c := &clusterConns{sys: sys, auth: auth, id: id, limit: limit, every: every, now: now, log: log,
		servers: map[string]*serverConns{}, towns: map[string]int{}, pending: map[string][]pendingGrant{},
		gone: map[connKey]time.Time{}, early: map[string][]time.Time{}, stop: make(chan struct{})}
	notes, err := auth.Subscribe(GrantsSubject, c.onGrant)
	if err != nil {
		return nil, errors.Wrap(err, "subscribing to the other coordinators' grants")
	}
	c.subs = append(c.subs, notes)
	if err := auth.Flush(); err != nil {
		c.close()
		return nil, errors.Wrap(err, "subscribing to the other coordinators' grants")
	}
	// One subscription for both kinds, so that they are handled in the
	// order they came (each subscription has its own goroutine).
	prefix := "$SYS.ACCOUNT." + ControlAccount + "."
	events, err := sys.Subscribe(prefix+"*", func(m *nats.Msg) {
		switch m.Subject {
		case prefix + "CONNECT":
			c.onEvent(m, true)
		case prefix + "DISCONNECT":
			c.onEvent(m, false)
		}
	})
	if err != nil {
		c.close()
		return nil, errors.Wrap(err, "subscribing to the servers' connection events")
	}
	c.subs = append(c.subs, events)
	if err := sys.Flush(); err != nil {
		c.close()
		return nil, errors.Wrap(err, "subscribing to the servers' connection events")
	}
	if err := c.reconcile(); err != nil {
		log.Warn("could not count the towns' connections yet; counting from the servers' events", KeyErr, err)
	}
	c.wg.Go(c.run)
	return c, nil
}

func (c *clusterConns) run() {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if err := c.reconcile(); err != nil {
			c.log.Warn("could not reconcile the towns' connection counts with the servers", KeyErr, err)
		}
	}
}

// close stops reconciling and listening. Safe to call twice.
func (c *clusterConns) close() {
	c.once.Do(func() {
		close(c.stop)
		for _, s := range c.subs {
			_ = s.Unsubscribe()
		}
	})
	c.wg.Wait()
}

// grantName is the name the callout gives a token connection: user
// (town:<id> or recovery:<id>) and the token's iat (issuedAtMark).
func grantName(user string, issuedAt time.Time) string {
	return user + issuedAtMark + strconv.FormatInt(issuedAt.UnixNano(), 10)
}

// admit counts a grant of a connection named name to town, unless the
// town already has limit connections, live or granted, and tells the
// other coordinators of it.
func (c *clusterConns) admit(town, name string) bool {
	now := c.now()
	c.mu.Lock()
	c.expireLocked(town, now)
	if c.limit > 0 && c.towns[town]+len(c.pending[town]) >= c.limit {
		c.mu.Unlock()
		return false
	}
	c.pending[town] = append(c.pending[town], pendingGrant{name: name, at: now})
	c.mu.Unlock()
	if c.auth != nil {
		b, _ := json.Marshal(grantNote{From: c.id, Town: town, Name: name})
		if err := c.auth.Publish(GrantsSubject, b); err != nil {
			c.log.Warn("could not tell the other coordinators of a grant", KeyTown, town, KeyErr, err)
		}
	}
	return true
}

// onGrant counts another coordinator's grant until a server announces it.
func (c *clusterConns) onGrant(m *nats.Msg) {
	var g grantNote
	if err := json.Unmarshal(m.Data, &g); err != nil || g.From == c.id {
		return
	}
	if town, _, ok := townConnOf(g.Name); !ok || town != g.Town {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(g.Town, now)
	if seen := c.early[g.Name]; len(seen) > 0 {
		if seen = seen[1:]; len(seen) == 0 {
			delete(c.early, g.Name)
		} else {
			c.early[g.Name] = seen
		}
		return // its server announced it already
	}
	c.pending[g.Town] = append(c.pending[g.Town], pendingGrant{name: g.Name, at: now})
}

// expireLocked drops the town's grants that no event confirmed in time,
// and the early announcements no note followed.
func (c *clusterConns) expireLocked(town string, now time.Time) {
	for name, seen := range c.early {
		i := 0
		for i < len(seen) && now.Sub(seen[i]) >= grantGrace {
			i++
		}
		if i == len(seen) {
			delete(c.early, name)
		} else if i > 0 {
			c.early[name] = seen[i:]
		}
	}
	p := c.pending[town]
	i := 0
	for i < len(p) && now.Sub(p[i].at) >= grantGrace {
		i++
	}
	switch {
	case i == len(p):
		delete(c.pending, town)
	case i > 0:
		c.pending[town] = append(p[:0], p[i:]...)
	}
}

func (c *clusterConns) onEvent(m *nats.Msg, connect bool) {
	var e connEventMsg
	if err := json.Unmarshal(m.Data, &e); err != nil || e.Server.ID == "" {
		return
	}
	if _, _, ok := townConnOf(e.Client.User); !ok {
		return // not a container's connection
	}
	ev := connEvent{connect: connect, server: e.Server.ID, cid: e.Client.ID, name: e.Client.User}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	key := connKey{ev.server, ev.cid}
	if _, closed := c.gone[key]; closed && connect {
		if !c.confirmLocked(ev.name) { // it was granted, and is gone already
			c.early[ev.name] = append(c.early[ev.name], now)
		}
		return
	}
	if !connect {
		c.gone[key] = now
	}
	if c.applyLocked(ev) && connect && !c.confirmLocked(ev.name) {
		c.early[ev.name] = append(c.early[ev.name], now)
	}
	if c.replay != nil {
		c.replay = append(c.replay, ev)
	}
}

// applyLocked applies one event to the servers' lists and the towns'
// counts; false when it changed nothing (already known).
func (c *clusterConns) applyLocked(ev connEvent) bool {
	town, _, _ := townConnOf(ev.name)
	s := c.servers[ev.server]
	if s == nil {
		if !ev.connect {
			return false
		}
		s = &serverConns{conns: map[uint64]string{}}
		c.servers[ev.server] = s
	}
	_, known := s.conns[ev.cid]
	switch {
	case ev.connect && !known:
		s.conns[ev.cid] = ev.name
		c.towns[town]++
		return true
	case !ev.connect && known:
		delete(s.conns, ev.cid)
		if c.towns[town]--; c.towns[town] <= 0 {
			delete(c.towns, town)
		}
		return true
	}
	return false
}

// confirmLocked drops the oldest grant of name, now that a server
// announced a connection by that name, and reports whether there was
// one. (Grants of one token share a name: the one dropped may be
// another than the one announced, which then counts from its own event.)
func (c *clusterConns) confirmLocked(name string) bool {
	town, _, _ := townConnOf(name)
	p := c.pending[town]
	for i, g := range p {
		if g.name == name {
			if p = append(p[:i], p[i+1:]...); len(p) == 0 {
				delete(c.pending, town)
			} else {
				c.pending[town] = p
			}
			return true
		}
	}
	return false
}

// reconcile replaces the lists of the servers that answer CONNZ with
// their answers (and the events since), and drops the connections of
// servers that missed reconcileMisses in a row.
func (c *clusterConns) reconcile() error {
	c.mu.Lock()
	c.replay = []connEvent{}
	c.mu.Unlock()
	pages, err := listConns(c.sys)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	replay := c.replay
	c.replay = nil
	if err != nil {
		return err
	}
	c.applyReconcileLocked(pages, replay, now)
	return nil
}

// applyReconcileLocked replaces the servers' lists with CONNZ's pages
// and the events since they were asked for. c.mu must be held.
func (c *clusterConns) applyReconcileLocked(pages []connzReply, replay []connEvent, now time.Time) {
	for k, at := range c.gone {
		if now.Sub(at) >= c.goneFor() {
			delete(c.gone, k)
		}
	}
	fresh := map[string]map[uint64]string{}
	for _, p := range pages {
		conns := fresh[p.Server.ID]
		if conns == nil {
			conns = map[uint64]string{}
			fresh[p.Server.ID] = conns
		}
		for _, cn := range p.Data.Conns {
			if _, closed := c.gone[connKey{p.Server.ID, cn.CID}]; closed {
				continue
			}
			if _, _, ok := townConnOf(cn.User); ok {
				conns[cn.CID] = cn.User
			}
		}
	}
	for id, s := range c.servers {
		if _, ok := fresh[id]; ok {
			continue
		}
		if s.missed++; s.missed >= reconcileMisses {
			if len(s.conns) > 0 {
				c.log.Info("a server no longer answers: its connections no longer count toward the town cap", "server", id, "count", len(s.conns))
			}
			delete(c.servers, id)
		}
	}
	for id, conns := range fresh {
		c.servers[id] = &serverConns{conns: conns}
	}
	for _, ev := range replay {
		if _, closed := c.gone[connKey{ev.server, ev.cid}]; !closed || !ev.connect {
			c.applyLocked(ev)
		}
	}
	clear(c.towns)
	for _, s := range c.servers {
		for _, name := range s.conns {
			town, _, _ := townConnOf(name)
			c.towns[town]++
		}
	}
}

// goneFor is how long a close is remembered: past two reconciles, every
// server has long stopped listing the connection.
func (c *clusterConns) goneFor() time.Duration { return 2*c.every + 2*kickWait }

// count is the town's live connections and the grants not yet announced
// by a server (this coordinator's and those it was told of), for tests
// and status.
func (c *clusterConns) count(town string) (live, pending int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.towns[town], len(c.pending[town])
}

// tokenUser is the user a token connection of g is named as: town:<id>,
// or recovery:<id> for the recovery-only grant (decide).
func tokenUser(g Grant) string {
	if g.RecoveryOnly {
		return "recovery:" + g.TownID
	}
	return "town:" + g.TownID
}

// closeCount stops the callout's count of the towns' connections.
func (c *Callout) closeCount() {
	if c.auth.cluster != nil {
		c.auth.cluster.close()
	}
}

// TownConns is how many connections of town the callout counts on the
// cluster: live (announced by the servers) and pending (granted by this
// coordinator, not yet announced). Zeros without CalloutConfig.System.
func (c *Callout) TownConns(town string) (live, pending int) {
	if c.auth.cluster == nil {
		return 0, 0
	}
	return c.auth.cluster.count(town)
}
