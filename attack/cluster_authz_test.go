package attack_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// The coordinators' own channels on a cluster (issue #11, session 5):
// the grants they tell each other (bus.GrantsSubject, the town cap's
// count), the password failures they share (bus.ThrottleSubject) and
// the callout requests themselves
// ($SYS.REQ.USER.AUTH) live in the auth callout's account, GASTOWN_AUTH.
// Whoever could publish there could lock a town out (a forged grant note
// counts for 3 s toward its cap), lock a source out of the admin
// password (a forged failure), or forge callout requests whose answers
// (empty refusals, sealed grants) go to a reply subject of its choosing.
// Whoever could subscribe there would see every coordinator's grants.

// throttleSubject is where the coordinators share password failures.
const throttleSubject = bus.ThrottleSubject

// authIdentity is one identity of the cluster, connected to one node.
type authIdentity struct {
	name string
	nc   *nats.Conn
}

// TestClusterAuthAccountIsTheCoordinatorsAlone: every identity other
// than the coordinators' auth key (a container, the admin, ops with its
// password and with the break-glass nkey, and the coordinator's other
// keys: control, state, ops copier, system), on
// every node, publishes on the coordinators' subjects and subscribes to
// them (and to everything it may): nothing it publishes reaches the auth
// account, and nothing the coordinators publish there (a real grant
// note, a throttle event) reaches it. Ops's JetStream can source nothing
// from the auth account either.
func TestClusterAuthAccountIsTheCoordinatorsAlone(t *testing.T) {
	w := startClusterWorld(t)
	creds := w.c.Creds()
	subjects := []string{bus.GrantsSubject, throttleSubject, bus.AuthCalloutSubject}
	// What the others publish, and what the coordinators do.
	marker, ours := []byte("forged-by-the-red-team"), []byte("told-by-a-coordinator")

	// The coordinators' side: an auth-key connection on every node
	// records what carries a marker, on any subject.
	var mu sync.Mutex
	var reached []string
	var told int
	var auths []*nats.Conn
	for i, url := range w.c.URLs() {
		nc, err := cluster.Dial([]string{url}, creds.Auth, nats.IgnoreDiscoveredServers())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		_, err = nc.Subscribe(">", func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case bytes.Contains(m.Data, marker):
				reached = append(reached, fmt.Sprintf("%s on node %d", m.Subject, i+1))
			case bytes.Contains(m.Data, ours):
				told++
			}
		})
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		auths = append(auths, nc)
	}

	// Everyone else, on every node.
	var ids []authIdentity
	tok := w.token(t, "alpha")
	for i, url := range w.c.URLs() {
		add := func(name string, nc *nats.Conn, err error) {
			require.NoError(t, err, "%s on node %d", name, i+1)
			ids = append(ids, authIdentity{name: fmt.Sprintf("%s on node %d", name, i+1), nc: nc})
		}
		nc, err := w.container(t, i, "alpha", tok)
		add("container", nc, err)
		nc, err = w.node(t, i, nats.UserInfo(bus.AdminUser, clusterAdminPW), nats.CustomInboxPrefix(schemas.AdminInbox))
		add("admin", nc, err)
		nc, err = w.node(t, i, nats.UserInfo(bus.OpsUser, clusterOpsPW), nats.CustomInboxPrefix(schemas.OpsInbox))
		add("ops", nc, err)
		for _, k := range []struct {
			name string
			kp   nkeys.KeyPair
		}{{"control key", creds.Control}, {"state key", creds.State}, {"ops-copy key", creds.OpsCopy}, {"system key", creds.System},
			{"break-glass ops key", w.c.OpsKey()}} {
			nc, err := cluster.Dial([]string{url}, k.kp, nats.IgnoreDiscoveredServers())
			if err == nil {
				t.Cleanup(nc.Close)
			}
			add(k.name, nc, err)
		}
	}

	// What the others hear of the coordinators' subjects.
	var heard []string
	for _, id := range ids {
		for _, s := range append([]string{">"}, subjects...) {
			// A refused subscription is a permissions violation, sent
			// asynchronously: refused or not, nothing of the coordinators'
			// may arrive. (What an identity publishes in its own account
			// it may hear itself: the ops copier's and the system key's
			// accounts have these subjects too, and nobody listens there.)
			_, _ = id.nc.Subscribe(s, func(m *nats.Msg) {
				if bytes.Contains(m.Data, ours) || (m.Subject == bus.GrantsSubject && bytes.Contains(m.Data, []byte(`"from"`))) {
					mu.Lock()
					heard = append(heard, fmt.Sprintf("%s heard %s", id.name, m.Subject))
					mu.Unlock()
				}
			})
		}
		_ = id.nc.Flush()
	}

	// Ops's JetStream: a stream sourcing the auth account, or capturing
	// the coordinators' subjects in its own.
	ops := ids[2].nc
	js, err := jetstream.New(ops)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVILAUTH", Sources: []*jetstream.StreamSource{{
		Name: "ANY", External: &jetstream.ExternalStream{APIPrefix: "$JS." + cluster.AuthAccount + ".API"}}}})
	require.Error(t, err, "ops made a stream sourcing the auth callout's account")
	capture, capErr := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVILGRANTS", Subjects: []string{bus.GrantsSubject, throttleSubject}})

	// The others publish on the coordinators' subjects (and request on
	// the callout's, with a reply of their own).
	for _, id := range ids {
		for _, s := range subjects {
			_ = id.nc.Publish(s, marker)
			_ = id.nc.PublishRequest(s, bus.GrantsSubject, marker)
		}
		_ = id.nc.Flush()
	}
	// The coordinators publish: a real grant (a container connecting
	// makes its coordinator tell the others), and marked events.
	nc, err := w.container(t, 1, "beta", w.token(t, "beta"))
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	for _, a := range auths {
		for _, s := range subjects[:2] {
			require.NoError(t, a.Publish(s, ours))
		}
		require.NoError(t, a.Flush())
	}
	// Every auth connection hears its own marked events: the listeners
	// work. Then a moment for anything that leaked to arrive.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return told == len(auths)*2*len(auths)
	}, wait, 10*time.Millisecond, "the auth account's listeners heard the coordinators' own events")
	<-time.After(time.Second)

	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, reached, "an identity other than the coordinators published in the auth account")
	require.Empty(t, heard, "an identity other than the coordinators heard their subjects")
	if capErr == nil {
		info, err := capture.Info(ctx)
		require.NoError(t, err)
		require.Zero(t, info.State.Msgs, "ops's stream captured the coordinators' subjects")
	}
}

// TestClusterTownCapIsPerTown: the cap counts connections by the name
// the callout gives them, town:<id>;iat=<ns>, from the token alone.
// Town ids are case-sensitive ([A-Za-z0-9_-]): a town that differs from
// another only in case neither shares nor takes its slots. And a town's
// container with a valid token that connects and closes as fast as it
// can, from many goroutines on every node, leaves another town's
// containers connecting meanwhile on every node.
func TestClusterTownCapIsPerTown(t *testing.T) {
	w := startClusterWorld(t)

	t.Run("TownsDifferingInCaseHaveTheirOwnCaps", func(t *testing.T) {
		lower, upper := w.token(t, "capx"), w.token(t, "Capx")
		for i := range 4 {
			_, err := w.container(t, i, "capx", lower)
			require.NoError(t, err, "capx connection %d", i+1)
		}
		for i := range 4 {
			_, err := w.container(t, i, "Capx", upper)
			require.NoError(t, err, "Capx connection %d: capx's took its slots", i+1)
		}
		_, err := w.container(t, 1, "capx", lower)
		require.Error(t, err, "a fifth capx connection was admitted")
		_, err = w.container(t, 2, "Capx", upper)
		require.Error(t, err, "a fifth Capx connection was admitted")
	})

	// A container names its connections like another town's: the count
	// goes by the callout's name for them, so the other town keeps every
	// slot.
	t.Run("ConnectionNamesTakeNoOtherTownsSlots", func(t *testing.T) {
		own := w.token(t, "namer")
		for i := range 4 {
			_, err := w.container(t, i, "namer", own, nats.Name(fmt.Sprintf("town:victim;iat=%d", i)))
			require.NoError(t, err)
		}
		victim := w.token(t, "victim")
		for i := range 4 {
			_, err := w.container(t, i, "victim", victim)
			require.NoError(t, err, "victim connection %d: another town's names took its slots", i+1)
		}
		_, err := w.container(t, 0, "namer", own)
		require.Error(t, err, "namer's connections named like victim's left its own count")
	})

	// Connects at the same instant, over every node and both
	// coordinators: each coordinator counts its own grants at once, so
	// the town has at most coordinators × TownConns (clustercount.go's
	// bound), and once its servers have announced them, none more.
	t.Run("ABurstStaysWithinTheBound", func(t *testing.T) {
		tok := w.token(t, "burst")
		start := make(chan struct{})
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for g := range 24 {
			wg.Go(func() {
				<-start
				if _, err := w.container(t, g, "burst", tok); err == nil {
					admitted.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		require.GreaterOrEqual(t, admitted.Load(), int64(4), "the burst got the town's cap at least")
		require.LessOrEqual(t, admitted.Load(), int64(2*4), "a burst got past coordinators × TownConns")
		require.Eventually(t, func() bool {
			n := 0
			for _, seen := range w.connz(t) {
				for _, s := range seen {
					if strings.HasPrefix(s.user, "town:burst;") {
						n++
					}
				}
			}
			return n == int(admitted.Load())
		}, wait, 50*time.Millisecond, "the servers list the burst's connections")
		for i := range 3 {
			_, err := w.container(t, i, "burst", tok)
			require.Error(t, err, "a connection past the cap was admitted after the burst, on node %d", i+1)
		}
	})

	t.Run("ChurnLeavesOtherTownsIn", func(t *testing.T) {
		w.churnWhileOthersConnect(t, 12, 50)
	})
}

// forgedRequest is an authorization request as a server makes it, for
// a client presenting tok, signed by a server key of the forger's own
// and sealed to the coordinators' xkey (public: every node's config
// names it).
func forgedRequest(t *testing.T, coordXKey, tok string) *nats.Msg {
	t.Helper()
	srv, err := nkeys.CreateServer()
	require.NoError(t, err)
	srvPub, err := srv.PublicKey()
	require.NoError(t, err)
	xkp, err := nkeys.CreateCurveKeys()
	require.NoError(t, err)
	xpub, err := xkp.PublicKey()
	require.NoError(t, err)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	userPub, err := user.PublicKey()
	require.NoError(t, err)
	req := jwt.NewAuthorizationRequestClaims(srvPub)
	req.UserNkey = userPub
	req.Server = jwt.ServerID{Name: "forged", ID: srvPub, XKey: xpub}
	req.ClientInformation.Host = "203.0.113.9"
	req.ConnectOptions.Token = tok
	enc, err := req.Encode(srv)
	require.NoError(t, err)
	sealed, err := xkp.Seal([]byte(enc), coordXKey)
	require.NoError(t, err)
	m := nats.NewMsg(bus.AuthCalloutSubject)
	m.Header.Set(server.AuthRequestXKeyHeader, xpub)
	m.Data = sealed
	return m
}

// TestClusterNobodyForgesCalloutRequests: the callout's first stage
// reads a request without checking its signature and answers a refusal
// with an empty message to whatever reply subject the request names. So
// whoever could publish on $SYS.REQ.USER.AUTH would choose where the
// coordinators answer (their own grant and throttle subjects, in their
// account) and could replay a captured request for a fresh grant (no
// nonce is checked). Nobody can: no identity but the coordinators' auth
// key is in the auth account (TestClusterAuthAccountIsTheCoordinatorsAlone),
// and nats-server itself denies every client of the callout account
// publishing there (auth.go, mergeDenyPermissions of AuthCalloutSubject),
// the coordinators' auth key included, on every node. Only the servers
// send requests, with replies of their own. (What the stages do with a
// forged request is bus's TestCalloutForgedRequests, on a server
// without that guard.)
func TestClusterNobodyForgesCalloutRequests(t *testing.T) {
	w := startClusterWorld(t)
	creds := w.c.Creds()
	coordXKey, err := creds.XKey.PublicKey()
	require.NoError(t, err)
	for i, url := range w.c.URLs() {
		onErr, errs := asyncErrs()
		forger, err := cluster.Dial([]string{url}, creds.Auth, nats.IgnoreDiscoveredServers(), onErr)
		require.NoError(t, err)
		t.Cleanup(forger.Close)
		for _, tok := range []string{"garbage", w.token(t, "forged")} {
			err := refusedWithin(t, errs, bus.AuthCalloutSubject, wait, func(ctx context.Context) error {
				_, err := forger.RequestMsgWithContext(ctx, forgedRequest(t, coordXKey, tok))
				return err
			})
			require.ErrorContains(t, err, "Permissions Violation", "node %d answered a forged request", i+1)
		}
	}
}

// TestClusterChurnAtTheDefaultCap: ChurnLeavesOtherTownsIn at the
// default town cap (bus.DefaultTownConns, 64): a town's container with
// a valid token churns 64 connects at a time, each a grant the
// coordinators verify, sign and seal, and the servers register and
// announce; another town's containers connect meanwhile on every node,
// within the servers' callout timeout.
func TestClusterChurnAtTheDefaultCap(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	key, err := token.NewKey([]byte("cluster-attack-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	w := &clusterWorld{c: c, issuer: token.NewIssuer(token.NewKeyRing(key), nil)}
	cfg := coordinator.DaemonConfig{
		Config: coordinator.Config{Replicas: 3, LeaseTTL: 3 * time.Second, Logger: bustest.Logger(t), DispatchCooldown: time.Hour},
		Bus:    bus.Config{AdminPassword: clusterAdminPW}, Cluster: c.Creds(),
	}
	for i := range 2 {
		cfg.NatsURL = c.URLs()[i]
		d, err := coordinator.StartDaemon(context.Background(), w.issuer, cfg)
		require.NoError(t, err)
		t.Cleanup(d.Close)
	}
	w.churnWhileOthersConnect(t, bus.DefaultTownConns, 200)
}

// churnWhileOthersConnect has town churn connect and close from
// goroutines at once, spread over the nodes, and once it has made warm
// connections, connects town calm's container to every node, three
// rounds: each must get in.
func (w *clusterWorld) churnWhileOthersConnect(t *testing.T, goroutines int, warm int64) {
	t.Helper()
	churn := w.token(t, "churn")
	stop := make(chan struct{})
	var made atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				nc, err := nats.Connect(w.c.URLs()[(g+i)%len(w.c.URLs())], nats.Token(churn),
					nats.CustomInboxPrefix(schemas.InboxRoot+".churn"), nats.NoReconnect(),
					nats.IgnoreDiscoveredServers(), nats.Timeout(wait))
				if err == nil {
					made.Add(1)
					nc.Close()
				}
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	require.Eventually(t, func() bool { return made.Load() >= warm }, time.Minute, 10*time.Millisecond, "the churn got going")
	calm := w.token(t, "calm")
	for round := range 3 {
		for i := range w.c.URLs() {
			nc, err := w.container(t, i, "calm", calm)
			require.NoError(t, err, "round %d: a container was refused on node %d while another town churned (%d connects so far)", round, i+1, made.Load())
			nc.Close()
		}
	}
	t.Logf("the churning town made %d connections meanwhile", made.Load())
}
