package attack_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gastown/gastown/bus"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Red-team probes (branch redteam). A probe that breaks the promise fails.

// stateRelay is the subject, in the ops account, that the service import
// carries to the state account's consumer creation for bucket.
func stateRelay(bucket string) string { return "$JS.gastown_state.API.CONSUMER.CREATE.KV_" + bucket }

// permErrs collects a connection's asynchronous errors.
func permErrs() (chan error, nats.Option) {
	errs := make(chan error, 256)
	return errs, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
}

// refused waits for one permission violation naming subject.
func rtRefused(t *testing.T, errs chan error, what, subject string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case err := <-errs:
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-deadline:
			t.Fatalf("BROKEN: %s on %q was not refused", what, subject)
		}
	}
}

// A container may take its own town's dispatches in the container queue
// group, never another town's, not with a wildcard, not in another group.
func TestRedTeamContainerQueueStealOtherTown(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	errs, eh := permErrs()
	nc := w.container(t, "alpha", "", eh)
	_, err := nc.QueueSubscribeSync("gastown.town.alpha.dispatch", schemas.ContainerQueue)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	select {
	case err := <-errs:
		t.Fatalf("its own dispatches in its queue group were refused: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	for _, c := range []struct{ subject, queue string }{
		{"gastown.town.beta.dispatch", schemas.ContainerQueue},
		{"gastown.town.beta.token", schemas.ContainerQueue},
		{"gastown.town.beta.control.stop", schemas.ContainerQueue},
		{"gastown.town.*.dispatch", schemas.ContainerQueue},
		{"gastown.town.>", schemas.ContainerQueue},
		{"gastown.town.alpha.dispatch", "other"},
		{"gastown.town.alpha.dispatch", schemas.CoordinatorQueue},
		{"gastown.town.beta.rpc.>", schemas.CoordinatorQueue},
		{"gastown.town.*.token.get", schemas.CoordinatorQueue},
		{"gastown.admin.>", schemas.CoordinatorQueue},
		{"gastown.town.beta.heartbeat", schemas.ContainerQueue},
	} {
		_, err := nc.QueueSubscribeSync(c.subject, c.queue)
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		rtRefused(t, errs, "subscribing in queue "+c.queue, c.subject)
	}
}

// No identity hears another's inbox: containers, admin, ops, recovery.
func TestRedTeamForeignInboxes(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	cerrs, ceh := permErrs()
	ctr := w.container(t, "alpha", "", ceh)
	aerrs, aeh := permErrs()
	adm := adminConn(t, w.h)
	adm.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { aerrs <- err })
	_ = aeh
	oerrs, oeh := permErrs()
	ops := w.ops(t, oeh)
	for _, c := range []struct {
		nc      *nats.Conn
		errs    chan error
		subject string
	}{
		{ctr, cerrs, "_INBOX.gastown.beta.>"}, {ctr, cerrs, "_INBOX.gastown.*.>"}, {ctr, cerrs, "_INBOX.>"},
		{ctr, cerrs, "_INBOX.gastown_coordinator.>"}, {ctr, cerrs, "_INBOX.gastown_admin.>"}, {ctr, cerrs, "_INBOX.gastown_ops.>"},
		{ctr, cerrs, "_INBOX.gastown.>"}, {ctr, cerrs, ">"}, {ctr, cerrs, "_R_.>"}, {ctr, cerrs, "$SYS.>"},
		{adm, aerrs, "_INBOX.gastown.beta.>"}, {adm, aerrs, "_INBOX.gastown_coordinator.>"}, {adm, aerrs, "gastown.town.*.token"},
		{adm, aerrs, "_R_.>"}, {adm, aerrs, "gastown.town.*.heartbeat"},
		{ops, oerrs, "_INBOX.gastown.beta.>"}, {ops, oerrs, "_INBOX.gastown_coordinator.>"}, {ops, oerrs, "gastown.mirror.>"},
		{ops, oerrs, "$JS.FC.>"}, {ops, oerrs, "$JS.ACK.>"}, {ops, oerrs, "_R_.>"}, {ops, oerrs, "gastown.town.*.token"},
		{ops, oerrs, "gastown.town.*.dispatch"}, {ops, oerrs, "$JS.gastown_state.API.>"}, {ops, oerrs, "$SYS.>"},
		{ops, oerrs, "_INBOX.gastown_admin.>"}, {ops, oerrs, "$JS.EVENT.>"}, {ops, oerrs, "$JS.API.>"},
	} {
		_, err := c.nc.SubscribeSync(c.subject)
		require.NoError(t, err)
		require.NoError(t, c.nc.Flush())
		rtRefused(t, c.errs, "subscribing", c.subject)
	}
}

// The system account's services and JetStream, which publish for their
// requester, are out of reach of containers, recovery connections and the
// admin; ops reaches only its own JetStream's read API.
func TestRedTeamServiceSubjectsRefused(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	old := w.h.Issuer.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	expired, _, err := old.MintContainer("alpha", "", time.Hour)
	require.NoError(t, err)
	cerrs, ceh := permErrs()
	ctr := w.container(t, "alpha", "", ceh)
	rerrs, reh := permErrs()
	rec := w.container(t, "alpha", expired, reh)
	aerrs := make(chan error, 256)
	adm := adminConn(t, w.h)
	adm.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { aerrs <- err })
	oerrs, oeh := permErrs()
	ops := w.ops(t, oeh)
	sys := []string{"$SYS.REQ.USER.INFO", "$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.ACCOUNT.PING.STATZ", "$SYS.REQ.SERVER.PING.CONNZ",
		"$SYS.REQ.SERVER.PING", "$SYS.REQ.ACCOUNT.GASTOWN.CONNZ", "$JS.API.INFO", "$JS.API.STREAM.LIST", "$KV.gastown_tokens.alpha",
		"$JS.gastown_state.API.CONSUMER.CREATE.KV_gastown_tokens", "$JS.FC.KV_gastown_towns.x", "gastown.mirror.x",
		// The subjects a cluster's coordinators share password failures
		// and grants on.
		bus.ThrottleSubject, bus.GrantsSubject}
	for _, c := range []struct {
		who  string
		nc   *nats.Conn
		errs chan error
		subs []string
	}{
		{"container", ctr, cerrs, append(sys, "gastown.town.beta.token.get", "gastown.town.beta.rpc.ping", "gastown.town.alpha.events",
			"gastown.town.alpha.token", "gastown.town.alpha.dispatch", "gastown.admin.token.revoke", "_INBOX.gastown.beta.x", "_INBOX.gastown_coordinator.x")},
		{"recovery", rec, rerrs, append(sys, "gastown.town.alpha.rpc.ping", "gastown.town.alpha.heartbeat", "gastown.town.beta.token.get")},
		{"admin", adm, aerrs, append(sys, "gastown.town.alpha.rpc.ping", "gastown.town.alpha.token", "_INBOX.gastown.beta.x")},
		{"ops", ops, oerrs, []string{"$SYS.REQ.USER.INFO", "$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.ACCOUNT.PING.STATZ", "$SYS.REQ.SERVER.PING.CONNZ",
			"$JS.gastown_state.API.CONSUMER.CREATE.KV_gastown_tokens", "gastown.mirror.x", "$JS.API.CONSUMER.DURABLE.CREATE.KV_gastown_towns.x",
			"$JS.API.STREAM.MSG.DELETE.KV_gastown_towns", "$JS.API.CONSUMER.PAUSE.KV_gastown_towns.x", "$JS.API.CONSUMER.UNPIN.KV_gastown_towns.x",
			"$JS.API.STREAM.SNAPSHOT.KV_gastown_towns", "$JS.API.ACCOUNT.PURGE.GASTOWN_OPS", "$JS.API.META.LEADER.STEPDOWN",
			"$JS.API.STREAM.LEADER.STEPDOWN.KV_gastown_towns", "_INBOX.gastown.beta.x", "_INBOX.gastown_coordinator.x", "$KV.gastown_towns.x",
			bus.ThrottleSubject, bus.GrantsSubject}},
	} {
		for _, subject := range c.subs {
			require.NoError(t, c.nc.PublishRequest(subject, c.nc.NewRespInbox(), []byte(`{}`)), "%s %s", c.who, subject)
			require.NoError(t, c.nc.Flush())
			rtRefused(t, c.errs, c.who+" publishing", subject)
		}
	}
}

// A container answers the coordinator's token push with an ack that
// carries a reply subject of its choosing (admin, another town, the
// coordinator's handlers), answers twice, and answers on a neighbouring
// coordinator inbox: the coordinator must act on none of it.
func TestRedTeamCraftedAckReply(t *testing.T) {
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	wa := w.watch(t)
	errs, eh := permErrs()
	nc := w.container(t, "alpha", "", eh)
	targets := []string{"gastown.admin.token.revoke", "gastown.town.beta.token.get", "gastown.town.beta.rpc.ping",
		"_INBOX.gastown.beta.x", "gastown.town.beta.dispatch"}
	var mu sync.Mutex
	var replies []string
	_, err := nc.QueueSubscribe("gastown.town.alpha.token", schemas.ContainerQueue, func(m *nats.Msg) {
		mu.Lock()
		replies = append(replies, m.Reply)
		mu.Unlock()
		ack, err := schemas.Encode(&schemas.Ack{OK: true})
		require.NoError(t, err)
		for _, target := range targets {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Reply: target, Data: ack, Header: nats.Header{
				"Nats-Rollup": []string{"all"}, "Nats-Expected-Last-Subject-Sequence": []string{"0"}}})
		}
		// A neighbouring inbox of the coordinator (another pending request).
		_ = nc.Publish(m.Reply[:strings.LastIndexByte(m.Reply, '.')]+".other", ack)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	var rot schemas.RotateResult
	w.admin(t, schemas.AdminTokenRotate, schemas.TownRequest{TownID: "alpha"}, &rot)
	t.Logf("rotation: %+v", rot)
	require.Never(t, func() bool { return wa.any(targets) }, 500*time.Millisecond, 10*time.Millisecond,
		"BROKEN: the coordinator published on one of %q because of a crafted ack", targets)
	mu.Lock()
	require.NotEmpty(t, replies)
	mu.Unlock()
	// Only the first answer passes; the others are refused.
	var n int
	for len(errs) > 0 {
		if strings.Contains((<-errs).Error(), "Permissions Violation for Publish") {
			n++
		}
	}
	require.GreaterOrEqual(t, n, len(targets), "BROKEN: the container answered the push more than once")
	require.True(t, w.revokedBefore(t, "alpha").IsZero())
	require.True(t, w.revokedBefore(t, "beta").IsZero())
}

// Ops reads every mirror, every heartbeat and every event while a token
// is minted, pushed, acknowledged and asked for: no token anywhere.
func TestRedTeamOpsSeesNoToken(t *testing.T) {
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	ops := w.ops(t)
	var mu sync.Mutex
	var seen []string
	_, err := ops.Subscribe("gastown.town.*.events", func(m *nats.Msg) { mu.Lock(); seen = append(seen, string(m.Data)); mu.Unlock() })
	require.NoError(t, err)
	_, err = ops.Subscribe("gastown.town.*.heartbeat", func(m *nats.Msg) { mu.Lock(); seen = append(seen, string(m.Data)); mu.Unlock() })
	require.NoError(t, err)
	require.NoError(t, ops.Flush())

	nc, tok := townConn(t, w.h, "alpha")
	tokens := []string{tok}
	_, err = nc.QueueSubscribe("gastown.town.alpha.token", schemas.ContainerQueue, func(m *nats.Msg) {
		var r schemas.TokenRotation
		if schemas.Decode(m.Data, &r) == nil {
			mu.Lock()
			tokens = append(tokens, r.Token)
			mu.Unlock()
		}
		_ = bus.Respond(m, &schemas.Ack{OK: true})
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	var rot schemas.RotateResult
	w.admin(t, schemas.AdminTokenRotate, schemas.TownRequest{TownID: "alpha"}, &rot)
	require.True(t, rot.Acknowledged, "%+v", rot)
	var got schemas.TokenRotation
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, bus.Request(ctx, nc, "gastown.town.alpha.token.get", &schemas.TokenRequest{TownID: "alpha", ContainerID: "c"}, &got))
	tokens = append(tokens, got.Token)
	require.NoError(t, nc.Publish("gastown.town.alpha.heartbeat", mustJSON(t, schemas.Heartbeat{Type: schemas.TypeHeartbeat, TownID: "alpha", ContainerID: "c", SentAt: time.Now()})))
	w.admin(t, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "alpha"}, nil)

	for _, b := range schemas.StateBuckets {
		if b == schemas.BucketLeases {
			continue // not copied for operators
		}
		w.mirrored(t, ops, b)
		inbox := schemas.OpsInbox + ".read." + b
		sub, err := ops.SubscribeSync(inbox)
		require.NoError(t, err)
		r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_"+b, map[string]any{
			"stream_name": "KV_" + b, "config": map[string]any{"deliver_subject": inbox, "deliver_policy": "all", "ack_policy": "none"},
		})
		require.Nil(t, r["error"], "%v", r)
		for {
			m, err := sub.NextMsg(300 * time.Millisecond)
			if err != nil {
				break
			}
			mu.Lock()
			seen = append(seen, b+": "+string(m.Data))
			mu.Unlock()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, seen)
	for _, s := range seen {
		for _, tk := range tokens {
			require.NotContains(t, s, tk, "BROKEN: ops read a token")
			sig := tk[strings.LastIndexByte(tk, '.')+1:]
			require.NotContains(t, s, sig, "BROKEN: ops read a token's signature")
		}
		require.NotContains(t, s, "eyJhbGciOi", "BROKEN: ops read something that looks like a JWT: %s", s)
	}
}

// A connection lives no longer than its token; an expired token gets a
// recovery connection that can only ask for a token, and that closes too.
func TestRedTeamConnectionDeadline(t *testing.T) {
	w := newWorld(t, coordinator.Config{RecoveryConnTTL: 2 * time.Second})
	short, _, err := w.h.Issuer.MintContainer("alpha", "", 2*time.Second)
	require.NoError(t, err)
	nc := w.container(t, "alpha", short)
	require.Eventually(t, func() bool { return nc.IsClosed() || !nc.IsConnected() }, 5*time.Second, 20*time.Millisecond,
		"BROKEN: a connection outlived its token's exp")
	// Past its exp (recovery works from that moment on).
	require.Eventually(t, func() bool { return time.Now().After(claimsOf(t, short).Expires()) }, 5*time.Second, 10*time.Millisecond)
	errs, eh := permErrs()
	rec := w.container(t, "alpha", short, eh)
	_, err = rec.QueueSubscribeSync("gastown.town.alpha.dispatch", schemas.ContainerQueue)
	require.NoError(t, err)
	require.NoError(t, rec.Flush())
	rtRefused(t, errs, "a recovery connection subscribing", "gastown.town.alpha.dispatch")
	require.NoError(t, rec.PublishMsg(rpcMsg(t, "alpha", schemas.ToolPing, short, nil)))
	require.NoError(t, rec.Flush())
	rtRefused(t, errs, "a recovery connection's RPC", "gastown.town.alpha.rpc.ping")
	require.Eventually(t, func() bool { return rec.IsClosed() || !rec.IsConnected() }, 5*time.Second, 20*time.Millisecond,
		"BROKEN: a recovery connection outlived its TTL")
}

// A thief connects with a leaked token over and over while the
// administrator revokes it: a connection that passed the revocation check
// just before the revocation, and was remembered just after the
// revocation closed the town's connections, would survive it, and could
// ask token.get (which trusts the connection) for a fresh token.
func TestRedTeamRevocationConnectRace(t *testing.T) {
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute,
		Limits: coordinator.Limits{TokenGetRate: 10_000, TokenGetBurst: 10_000}})
	// Each round races connects against one revocation; the pauses pace
	// the race (they let the thieves get going, and the server close what
	// it closes), they are not waits for something to happen.
	deadline := time.Now().Add(5 * time.Second)
	rounds := 0
	for ; rounds < 40 && time.Now().Before(deadline); rounds++ {
		tok := w.h.ContainerToken("alpha")
		var revoking, stop atomic.Bool
		var mu sync.Mutex
		var kept []*nats.Conn
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				for !stop.Load() {
					late := revoking.Load()
					nc, err := nats.Connect(w.h.URL(), nats.Token(tok), nats.MaxReconnects(0), nats.Timeout(time.Second),
						nats.CustomInboxPrefix(schemas.InboxRoot+".alpha"))
					if err != nil {
						continue
					}
					if late {
						mu.Lock()
						kept = append(kept, nc)
						mu.Unlock()
					} else {
						nc.Close()
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		revoking.Store(true)
		var res schemas.RevokeResult
		w.admin(t, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "alpha"}, &res)
		time.Sleep(20 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		for _, nc := range kept {
			if nc.IsConnected() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				var rot schemas.TokenRotation
				err := bus.Request(ctx, nc, "gastown.town.alpha.token.get", &schemas.TokenRequest{TownID: "alpha", ContainerID: "thief"}, &rot)
				cancel()
				t.Errorf("BROKEN (round %d): a connection with a token issued %s survived the revocation at %s; token.get on it: err=%v, fresh token issued %v",
					rounds, claimsOf(t, tok).Issued(), res.RevokedBefore, err, rot.IssuedAt)
			}
			nc.Close()
		}
		mu.Unlock()
		if t.Failed() {
			return
		}
	}
	t.Logf("%d revocation rounds raced", rounds)
}

// foreignStateConsumers lists the consumers of the state buckets that are
// not the server's own: the coordinator's and the ops copier's watches all
// deliver to the coordinator's inbox (an ordered watch may be made again at
// any time, so their number moves; where they deliver does not).
func (w *world) foreignStateConsumers(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var out []string
	for _, b := range schemas.StateBuckets {
		st, err := w.state(t).Stream(ctx, "KV_"+b)
		require.NoError(t, err)
		infos := st.ListConsumers(ctx)
		for ci := range infos.Info() {
			if !strings.HasPrefix(ci.Config.DeliverSubject, schemas.CoordinatorInbox+".") {
				out = append(out, b+"/"+ci.Name+" → "+ci.Config.DeliverSubject)
			}
		}
		require.NoError(t, infos.Err())
	}
	return out
}

// Ops aims everything JetStream publishes for it (direct get answers,
// push deliveries, pull deliveries, API answers) and its own publishes at
// the flow-control import, the mirror-delivery import and the state relay.
// Nothing may reach the state account, and the mirrors keep following.
func TestRedTeamOpsSpraysStateImports(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	ops := w.ops(t)
	for _, b := range schemas.StateBuckets {
		if b == schemas.BucketLeases {
			continue // not copied for operators
		}
		w.mirrored(t, ops, b)
	}
	before := w.kvRevisions(t)
	require.Empty(t, w.foreignStateConsumers(t))
	targets := []string{
		"$JS.FC.KV_gastown_towns.x.y", "$JS.FC.KV_gastown_tokens.x.y", "gastown.mirror.x", "gastown.mirror.KV_gastown_towns",
		stateRelay(schemas.BucketTokens), stateRelay(schemas.BucketTowns),
		// (the ops account's own STREAM.DELETE / PURGE: see TestRedTeamOpsDeletesMirrorWithEmptyAnswer)
		"$KV.gastown_tokens.beta", "$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.USER.INFO",
	}
	for _, b := range []string{schemas.BucketTowns, schemas.BucketTokens} {
		get := "$JS.API.DIRECT.GET.KV_" + b
		for _, target := range targets {
			require.NoError(t, ops.PublishRequest(get, target, []byte(`{"seq":1}`)))
			require.NoError(t, ops.PublishRequest(get, target, []byte(`{"multi_last":["$KV.`+b+`.>"],"batch":10}`)))
			require.NoError(t, ops.PublishRequest("$JS.API.STREAM.INFO.KV_"+b, target, nil))
			require.NoError(t, ops.PublishRequest("$JS.API.STREAM.MSG.GET.KV_"+b, target, []byte(`{"seq":1}`)))
		}
		for i, target := range targets {
			r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_"+b, map[string]any{"stream_name": "KV_" + b, "config": map[string]any{
				"deliver_subject": target, "deliver_policy": "all", "ack_policy": "none", "flow_control": true, "idle_heartbeat": int64(100 * time.Millisecond),
				"description": fmt.Sprint("spray ", i)}})
			if r["error"] != nil {
				// Delivering onto the copy's own subjects is refused outright.
				require.Contains(t, fmt.Sprint(r["error"]), "forms a cycle", "%v", r)
			}
		}
		name := "pull-" + b
		r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_"+b+"."+name, map[string]any{"stream_name": "KV_" + b, "config": map[string]any{
			"name": name, "deliver_policy": "all", "ack_policy": "explicit"}})
		require.Nil(t, r["error"], "%v", r)
		for _, target := range targets {
			require.NoError(t, ops.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.KV_"+b+"."+name, target, []byte(`{"batch":5,"expires":200000000}`)))
		}
		// Its own publishes on flow control reach the state account's
		// consumers' flow-control subjects: only an exact, random one acts.
		for i := range 50 {
			require.NoError(t, ops.PublishRequest(fmt.Sprintf("$JS.FC.KV_%s.x%d.y", b, i), stateRelay(b), []byte(`{"stream_name":"KV_`+b+`","config":{"deliver_subject":"$KV.gastown_towns.evil"}}`)))
		}
	}
	require.NoError(t, ops.Flush())
	require.Never(t, func() bool { return w.stateMoved(before) }, 2*time.Second, 100*time.Millisecond, "BROKEN: the state changed")
	require.Equal(t, before, w.kvRevisions(t), "BROKEN: the state changed")
	require.Empty(t, w.foreignStateConsumers(t), "BROKEN: consumers appeared in the state account")
	// The mirrors still follow the state.
	w.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "beta", BeadID: "after", RigID: "r", Title: "after the spray"}, nil)
	w.admin(t, schemas.AdminTownCreate, schemas.TownCreate{TownID: "gamma"}, nil)
	for _, b := range []string{schemas.BucketBeads, schemas.BucketTowns, schemas.BucketTokens} {
		w.mirrored(t, ops, b)
	}
	require.True(t, w.revokedBefore(t, "beta").IsZero())
}

// opsStreamInfo is ops's view of its mirror of bucket: "" when gone.
func opsStreamInfo(t *testing.T, ops *nats.Conn, bucket string) (exists bool, msgs float64) {
	t.Helper()
	r := opsAPI(t, ops, "$JS.API.STREAM.INFO.KV_"+bucket, map[string]any{})
	if r["error"] != nil {
		return false, 0
	}
	return true, r["state"].(map[string]any)["messages"].(float64)
}

// A container answers a dispatch with a result that carries a reply
// subject and JetStream headers of its choosing, and answers again: the
// coordinator publishes nothing for it, and the dispatch carries no token.
func TestRedTeamCraftedDispatchReply(t *testing.T) {
	w := newWorld(t, coordinator.Config{DispatchCooldown: time.Hour})
	wa := w.watch(t)
	nc, tok := townConn(t, w.h, "alpha")
	targets := []string{"gastown.admin.token.revoke", "gastown.town.beta.dispatch", "gastown.town.beta.token",
		"_INBOX.gastown.beta.x", "gastown.town.beta.rpc.ping", "$KV.gastown_agents.beta.p1"}
	got := make(chan *nats.Msg, 4)
	_, err := nc.QueueSubscribe("gastown.town.alpha.dispatch", schemas.ContainerQueue, func(m *nats.Msg) {
		got <- m
		var req schemas.StartAgent
		_ = schemas.Decode(m.Data, &req)
		res, _ := schemas.Encode(&schemas.StartAgentResult{OK: true, AgentID: "p1", RunID: req.RunID})
		for _, target := range targets {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Reply: target, Data: res, Header: nats.Header{
				"Nats-Rollup": []string{"all"}, "Nats-Expected-Stream": []string{"KV_gastown_agents"}, "Nats-Msg-Id": []string{"x"}}})
		}
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	w.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "alpha", BeadID: "b2", RigID: "r", Title: "more work"}, nil)
	w.admin(t, schemas.AdminSling, schemas.Sling{TownID: "alpha", BeadID: "b2", AgentID: "p2"}, nil)
	var m *nats.Msg
	select {
	case m = <-got:
	case <-time.After(wait):
		t.Fatal("no dispatch came")
	}
	require.NotContains(t, string(m.Data), tok[:20], "BROKEN: a dispatch carries the town's token")
	require.NotContains(t, string(m.Data), "eyJhbGciOi", "BROKEN: a dispatch carries a JWT")
	require.Never(t, func() bool { return wa.any(targets) }, 500*time.Millisecond, 10*time.Millisecond,
		"BROKEN: the coordinator published on one of %q because of a crafted dispatch result", targets)
	require.True(t, w.revokedBefore(t, "alpha").IsZero())
	require.True(t, w.revokedBefore(t, "beta").IsZero())
}

// Identifiers that would change a subject's meaning are refused wherever
// a town id enters: the admin's town.create, minting.
func TestRedTeamUnusualTownIDs(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	for _, id := range []string{"*", ">", "a.b", "alpha.rpc", "beta.>", "a b", "a\tb", "a\r\nPUB x 1", "", "ä", "alpha\x00", strings.Repeat("a", 65), "_INBOX", "$SYS"} {
		err := adminCall(w.h.AdminConn(), schemas.AdminTownCreate, schemas.TownCreate{TownID: id}, nil)
		if id == "_INBOX" {
			require.NoError(t, err) // plain identifier characters
			continue
		}
		require.Error(t, err, "BROKEN: town %q was created", id)
		_, _, err = w.h.Issuer.MintContainer(id, "", time.Hour)
		require.Error(t, err, "BROKEN: a token for town %q was minted", id)
	}
	// A town named like an inbox root still gets only its own subjects.
	nc := w.container(t, "_INBOX", "")
	errs := make(chan error, 8)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	_, err := nc.SubscribeSync("_INBOX.gastown.beta.x")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	rtRefused(t, errs, "town _INBOX subscribing", "_INBOX.gastown.beta.x")
}

// The ops account's JetStream API reached through an empty answer: the
// system-only account purge is still refused.
func TestRedTeamOpsAccountPurgeWithEmptyAnswer(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	ops := w.ops(t)
	for _, b := range []string{schemas.BucketTowns, schemas.BucketBeads} {
		w.mirrored(t, ops, b)
	}
	for _, target := range []string{"$JS.API.ACCOUNT.PURGE.GASTOWN_OPS", "$JS.API.ACCOUNT.PURGE.$G", "$JS.API.SERVER.REMOVE", "$JS.API.META.LEADER.STEPDOWN"} {
		require.NoError(t, ops.PublishRequest("$JS.API.DIRECT.GET.KV_gastown_towns", target, []byte(`{"seq":999999}`)))
	}
	require.NoError(t, ops.Flush())
	sentinel(t, ops, schemas.BucketTowns, "alpha") // the direct gets before it are answered
	w.mirrored(t, ops, schemas.BucketBeads)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := w.state(t).Stream(ctx, "KV_gastown_beads")
	require.NoError(t, err, "BROKEN: the state account's streams are gone")
}

// alpha's mayor names beta's things in every tool that takes an id: it
// sees none of beta's, changes none of beta's state.
func TestRedTeamToolsNameAnotherTown(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	w.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "beta", BeadID: "secret", RigID: "r", Title: "beta-secret-title"}, nil)
	nc, tok := townConn(t, w.h, "alpha")
	betaKeys := func() map[string]uint64 {
		out := map[string]uint64{}
		for k, v := range w.kvRevisions(t) {
			if strings.Contains(k, "/beta") {
				out[k] = v
			}
		}
		return out
	}
	before := betaKeys()
	calls := []struct {
		method string
		body   any
	}{
		{schemas.ToolBeadGet, map[string]any{"beadId": "secret"}},
		{schemas.ToolBeadGet, map[string]any{"beadId": "beta.secret"}},
		{schemas.ToolBeadClose, map[string]any{"beadId": "secret"}},
		{schemas.ToolBeadUpdate, map[string]any{"beadId": "secret", "title": "pwned"}},
		{schemas.ToolBeadsList, map[string]any{}},
		{schemas.ToolAgentsList, map[string]any{}},
		{schemas.ToolRigsList, map[string]any{}},
		{schemas.ToolMailSend, map[string]any{"to": "beta.mayor", "subject": "x"}},
		{schemas.ToolMailSend, map[string]any{"to": "../beta/mayor", "subject": "x"}},
		{schemas.ToolSling, map[string]any{"beadId": "secret", "agentId": "p9"}},
		{schemas.ToolSling, map[string]any{"townId": "beta", "beadId": "secret", "agentId": "p9"}},
		{schemas.ToolSling, map[string]any{"townId": "beta", "beadId": "b1", "agentId": "p1"}},
		{schemas.ToolConvoyCreate, map[string]any{"title": "c", "beads": []string{"secret"}}},
		{schemas.ToolConvoyStatus, map[string]any{"convoyId": "secret"}},
		{schemas.ToolMailCheck, map[string]any{}},
	}
	for _, c := range calls {
		var out any
		err := tool(t, nc, "alpha", tok, c.method, c.body, &out)
		b := mustJSON(t, out)
		require.NotContains(t, string(b), "beta-secret-title", "BROKEN: %s returned beta's bead", c.method)
		require.NotContains(t, string(b), "owner-beta", "BROKEN: %s returned beta's owner", c.method)
		t.Logf("%s %v -> err=%v", c.method, c.body, err)
	}
	require.Equal(t, before, betaKeys(), "BROKEN: alpha's tools changed beta's state")
}

// JetStream answers on the reply subject the operator names, and some of
// its answers are empty (a direct get's 404, a pull's 404): aimed at the ops
// account's own API, an empty body is a valid request to purge or delete a
// stream. A purge of an ops copy is refused (the copies deny purges); a
// deletion cannot be refused by configuration, so the server makes the copy
// again at once, holding the state. The operator only ever harms its own
// view, and only for a moment.
func TestRedTeamOpsEmptyAnswersAtItsOwnAPI(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	ops := w.ops(t)
	w.mirrored(t, ops, schemas.BucketTowns)
	w.mirrored(t, ops, schemas.BucketBeads)

	t.Run("purge by a direct get's 404", func(t *testing.T) {
		_, n := opsStreamInfo(t, ops, schemas.BucketTowns)
		require.NotZero(t, n)
		require.NoError(t, ops.PublishRequest("$JS.API.DIRECT.GET.KV_gastown_towns", "$JS.API.STREAM.PURGE.KV_gastown_towns", []byte(`{"seq":999999}`)))
		require.NoError(t, ops.Flush())
		// A direct get answered to ops's inbox after it: answered in order,
		// so the purge request has been handled by then.
		sentinel(t, ops, schemas.BucketTowns, "alpha")
		_, after := opsStreamInfo(t, ops, schemas.BucketTowns)
		require.Equal(t, n, after, "BROKEN: ops purged its copy of gastown_towns")
	})
	for _, tc := range []struct {
		name, bucket string
		aim          func()
	}{
		{"delete by a direct get's 404", schemas.BucketTowns, func() {
			require.NoError(t, ops.PublishRequest("$JS.API.DIRECT.GET.KV_gastown_towns", "$JS.API.STREAM.DELETE.KV_gastown_towns", []byte(`{"seq":999999}`)))
		}},
		{"delete by a pull's 404", schemas.BucketBeads, func() {
			r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_gastown_towns.empty", map[string]any{"stream_name": "KV_gastown_towns", "config": map[string]any{
				"name": "empty", "filter_subject": "$KV.gastown_towns.nosuch", "ack_policy": "explicit"}})
			require.Nil(t, r["error"], "%v", r)
			require.NoError(t, ops.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.KV_gastown_towns.empty", "$JS.API.STREAM.DELETE.KV_gastown_beads", []byte(`{"batch":1,"no_wait":true}`)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.aim()
			require.NoError(t, ops.Flush())
			w.mirrored(t, ops, tc.bucket) // made again, holding the state
			// And it keeps following the state.
			w.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "beta", BeadID: "after-" + tc.bucket[8:], RigID: "r", Title: "after"}, nil)
			w.admin(t, schemas.AdminTownCreate, schemas.TownCreate{TownID: "t" + tc.bucket[8:12]}, nil)
			w.mirrored(t, ops, tc.bucket)
		})
	}
}
