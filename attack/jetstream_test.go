package attack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// JetStream redirection: JetStream publishes a stored value wherever its
// requester says (a reply subject, a consumer's deliver subject). The
// operator, who may read the state, aims it at handlers, at the state
// itself and at the JetStream API: none of it may reach anything but the
// operator.

// opsAPI sends a JetStream API request as ops and decodes the reply.
func opsAPI(t *testing.T, ops *nats.Conn, subject string, req any) map[string]any {
	t.Helper()
	resp, err := ops.Request(subject, mustJSON(t, req), wait)
	require.NoError(t, err, "%s", subject)
	var out map[string]any
	require.NoError(t, json.Unmarshal(resp.Data, &out))
	return out
}

// mirrored waits until the ops copy of bucket holds every key and value
// the state bucket holds.
func (w *world) mirrored(t *testing.T, ops *nats.Conn, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	src, err := w.state(t).KeyValue(ctx, bucket)
	require.NoError(t, err)
	js, err := jetstream.New(ops)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		dst, err := js.KeyValue(ctx, bucket)
		if err != nil {
			return false
		}
		keys, err := src.ListKeys(ctx)
		if err != nil {
			return errors.Is(err, jetstream.ErrNoKeysFound)
		}
		for k := range keys.Keys() {
			want, err1 := src.Get(ctx, k)
			got, err2 := dst.Get(ctx, k)
			if err1 != nil || err2 != nil || string(want.Value()) != string(got.Value()) {
				return false
			}
		}
		return true
	}, wait, 10*time.Millisecond, "the ops copy of %s never caught up", bucket)
}

// sentinel reads a value through a direct get answered on ops's own inbox:
// direct gets of one stream are answered in order, so when it arrives the
// attack's own direct get, sent before, has been answered too.
func sentinel(t *testing.T, ops *nats.Conn, bucket, key string) {
	t.Helper()
	resp, err := ops.Request("$JS.API.DIRECT.GET.KV_"+bucket+".$KV."+bucket+"."+key, nil, wait)
	require.NoError(t, err)
	require.NotEmpty(t, resp.Data)
}

func TestJetStreamRedirectDirectGet(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	wa := w.watch(t)
	ops := w.ops(t)
	w.mirrored(t, ops, schemas.BucketTowns)
	before := w.kvRevisions(t)
	get := "$JS.API.DIRECT.GET.KV_gastown_towns.$KV.gastown_towns.beta"
	targets := append([]string{
		"gastown.admin.token.rotate", "gastown.admin.token.revoke", "gastown.admin.sling",
		"gastown.town.beta.rpc.checkpoint", "gastown.town.beta.token.get",
		"$KV.gastown_towns.evil", "$KV.gastown_tokens.beta",
		"$JS.API.STREAM.PURGE.KV_gastown_towns", "$JS.API.STREAM.DELETE.KV_gastown_towns",
		"$JS.gastown_state.API.CONSUMER.CREATE.KV_gastown_towns",
	}, replyTargets[:len(replyTargets)-1]...)
	for _, target := range targets {
		require.NoError(t, ops.PublishRequest(get, target, nil))
	}
	require.NoError(t, ops.Flush())
	sentinel(t, ops, schemas.BucketTowns, "beta")

	for _, target := range targets {
		require.Empty(t, wa.on(target), "a direct get's answer reached %q in the control account", target)
	}
	require.Equal(t, before, w.kvRevisions(t), "a direct get's answer was written into the state")
	require.True(t, w.revokedBefore(t, "beta").IsZero())
	// Its own mirror is intact too.
	resp, err := ops.Request("$JS.API.STREAM.INFO.KV_gastown_towns", nil, wait)
	require.NoError(t, err)
	require.Contains(t, string(resp.Data), `"messages":`)
	require.NotContains(t, string(resp.Data), `"messages":0`)
}

func TestJetStreamRedirectPushConsumer(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	wa := w.watch(t)
	ops := w.ops(t)
	for _, b := range []string{schemas.BucketTowns, schemas.BucketBeads} {
		w.mirrored(t, ops, b)
	}
	before := w.kvRevisions(t)
	targets := []string{
		"gastown.admin.token.revoke", "gastown.admin.sling", "gastown.admin.token.rotate",
		"gastown.town.beta.heartbeat", "gastown.town.beta.rpc.mail.send",
		"$KV.gastown_beads.beta.evil", "$KV.gastown_towns.evil",
		"_INBOX.gastown_coordinator.x",
	}
	for i, target := range targets {
		r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_gastown_towns", map[string]any{
			"stream_name": "KV_gastown_towns",
			"config":      map[string]any{"deliver_subject": target, "deliver_policy": "all", "ack_policy": "none", "description": fmt.Sprint("attack ", i)},
		})
		if r["error"] != nil {
			// Delivering onto its own copy's subjects is refused outright.
			require.Contains(t, fmt.Sprint(r["error"]), "forms a cycle", "the operator may make an ephemeral push consumer on its copy: %v", r)
		}
	}
	// A consumer of its own, on its own inbox: once it has every message,
	// JetStream has had every chance to deliver the others too.
	inbox := schemas.OpsInbox + ".sentinel"
	sub, err := ops.SubscribeSync(inbox)
	require.NoError(t, err)
	r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_gastown_towns", map[string]any{
		"stream_name": "KV_gastown_towns",
		"config":      map[string]any{"deliver_subject": inbox, "deliver_policy": "all", "ack_policy": "none"},
	})
	require.Nil(t, r["error"], "%v", r)
	for range 2 { // alpha and beta
		_, err := sub.NextMsg(wait)
		require.NoError(t, err)
	}
	for _, target := range targets {
		require.Empty(t, wa.on(target), "a consumer delivered on %q in the control account", target)
	}
	require.Equal(t, before, w.kvRevisions(t), "a consumer's deliveries were written into the state")
	require.True(t, w.revokedBefore(t, "beta").IsZero(), "a consumer's delivery revoked beta")
}

// The operator creates no lasting state: no durable consumer through the
// legacy API, no consumer that outlives an hour unused, and at most a
// bounded number of them; no stream changes at all.
func TestJetStreamNoLastingState(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	var violations []string
	errs := make(chan error, 64)
	ops := w.ops(t, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	w.mirrored(t, ops, schemas.BucketTowns)

	for _, subject := range []string{
		"$JS.API.CONSUMER.DURABLE.CREATE.KV_gastown_towns.lasting",
		"$JS.API.STREAM.CREATE.mine",
		"$JS.API.STREAM.UPDATE.KV_gastown_towns",
		"$JS.API.STREAM.DELETE.KV_gastown_towns",
		"$JS.API.STREAM.PURGE.KV_gastown_towns",
		"$JS.gastown_state.API.CONSUMER.CREATE.KV_gastown_towns",
		"$KV.gastown_towns.beta",
		"gastown.town.beta.heartbeat",
		"gastown.town.beta.events",
		"$SYS.REQ.SERVER.PING.CONNZ",
		"$SYS.REQ.USER.INFO",
	} {
		require.NoError(t, ops.Publish(subject, []byte(`{"stream_name":"KV_gastown_towns","config":{"durable_name":"lasting"}}`)))
		violations = append(violations, subject)
	}
	require.NoError(t, ops.Flush())
	for range violations {
		select {
		case err := <-errs:
			require.Contains(t, err.Error(), "Permissions Violation for Publish")
		case <-time.After(wait):
			t.Fatal("a forbidden publish was not refused")
		}
	}

	// A durable through the new API gets the mirror's inactivity limit,
	// and asking for longer is refused.
	r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_gastown_towns.d1", map[string]any{
		"stream_name": "KV_gastown_towns", "config": map[string]any{"durable_name": "d1", "ack_policy": "explicit"},
	})
	require.Nil(t, r["error"], "%v", r)
	cfg := r["config"].(map[string]any)
	require.EqualValues(t, time.Hour.Nanoseconds(), cfg["inactive_threshold"], "a durable of the operator is removed after an hour unused")
	r = opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_gastown_towns.d2", map[string]any{
		"stream_name": "KV_gastown_towns", "config": map[string]any{"durable_name": "d2", "inactive_threshold": (1000 * time.Hour).Nanoseconds()},
	})
	require.NotNil(t, r["error"], "a consumer asking to live 1000 h unused was made")
	// And there can be only so many.
	var refused bool
	for i := range 200 {
		name := fmt.Sprintf("many%d", i)
		r := opsAPI(t, ops, "$JS.API.CONSUMER.CREATE.KV_gastown_towns."+name, map[string]any{
			"stream_name": "KV_gastown_towns", "config": map[string]any{"durable_name": name},
		})
		if r["error"] != nil {
			require.Contains(t, fmt.Sprint(r["error"]), "maximum consumers")
			refused = true
			break
		}
	}
	require.True(t, refused, "the operator made 200 consumers on one mirror")

	// Nothing of it reached the state account.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := w.state(t).Stream(ctx, "KV_gastown_towns")
	require.NoError(t, err)
	for name := range st.ConsumerNames(ctx).Name() {
		require.False(t, strings.HasPrefix(name, "many") || name == "d1" || name == "lasting", "consumer %s is in the state account", name)
	}
}

// The operator can make its own JetStream write into its copy of the state
// (a direct get answered onto the copy's $KV subjects): it fools only
// itself, and the server restores the copy; the state is untouched.
func TestJetStreamOpsScribblesOnItsCopy(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	ops := w.ops(t)
	w.mirrored(t, ops, schemas.BucketTowns)
	before := w.kvRevisions(t)
	get := "$JS.API.DIRECT.GET.KV_gastown_towns.$KV.gastown_towns.alpha"
	require.NoError(t, ops.PublishRequest(get, "$KV.gastown_towns.beta", nil)) // beta's record overwritten with alpha's
	require.NoError(t, ops.PublishRequest(get, "$KV.gastown_towns.evil", nil)) // a key the state has not
	require.NoError(t, ops.Flush())

	js, err := jetstream.New(ops)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	copyKV, err := js.KeyValue(ctx, schemas.BucketTowns)
	require.NoError(t, err)
	stateKV, err := w.state(t).KeyValue(ctx, schemas.BucketTowns)
	require.NoError(t, err)
	realBeta, err := stateKV.Get(ctx, "beta")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := copyKV.Get(ctx, "evil")
		beta, err2 := copyKV.Get(ctx, "beta")
		return errors.Is(err, jetstream.ErrKeyNotFound) && err2 == nil && string(beta.Value()) == string(realBeta.Value())
	}, 3*wait, 20*time.Millisecond, "the server never restored the operator's copy")
	after := w.kvRevisions(t)
	for k, rev := range before {
		if strings.HasPrefix(k, schemas.BucketTowns+"/") || strings.HasPrefix(k, schemas.BucketTokens+"/") {
			require.Equal(t, rev, after[k], "the operator's scribbles reached the state: %s", k)
		}
	}
	_, evil := after[schemas.BucketTowns+"/evil"]
	require.False(t, evil, "the operator's scribble reached the state")
}
