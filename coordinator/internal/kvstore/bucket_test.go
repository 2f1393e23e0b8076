package kvstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

type counter struct {
	N int `json:"n"`
}

// open binds a bucket named "kvstore_test" on js; its watch stops at the
// end of the test.
func open(t *testing.T, js jetstream.JetStream) *kvstore.Bucket[counter] {
	t.Helper()
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	b, err := kvstore.Open[counter](t.Context(), runCtx, js, jetstream.KeyValueConfig{Bucket: "kvstore_test", History: 1}, &wg, nil)
	require.NoError(t, err)
	return b
}

func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(bustest.ConnectState(t, bustest.Start(t, bus.Config{})))
	require.NoError(t, err)
	return js
}

// TestBucketErrors: each refusal is the store's sentinel, and changes
// nothing.
func TestBucketErrors(t *testing.T) {
	b := open(t, newJetStream(t))
	ctx := t.Context()

	_, err := b.Update(ctx, "absent", func(c *counter) error { c.N++; return nil })
	require.True(t, errors.Is(err, kvstore.ErrKeyNotFound), "%v", err)
	_, ok := b.Get("absent")
	require.False(t, ok, "a failed update creates nothing")

	require.NoError(t, b.Create(ctx, "k", counter{N: 1}))
	err = b.Create(ctx, "k", counter{N: 2})
	require.True(t, errors.Is(err, kvstore.ErrKeyExists), "%v", err)
	got, ok := b.Get("k")
	require.True(t, ok)
	require.Equal(t, 1, got.N, "a refused create leaves the value")

	abandon := errors.New("changed my mind")
	_, err = b.Update(ctx, "k", func(c *counter) error { c.N = 99; return abandon })
	require.ErrorIs(t, err, abandon)
	got, _ = b.Get("k")
	require.Equal(t, 1, got.N)

	v, err := b.Upsert(ctx, "fresh", func(c *counter) error { c.N += 5; return nil })
	require.NoError(t, err)
	require.Equal(t, 5, v.N, "upsert starts from the zero value")

	require.NoError(t, b.Delete(ctx, "k"))
	require.NoError(t, b.Delete(ctx, "k"), "deleting a missing key is no error")
	require.Equal(t, []string{"fresh"}, b.Keys(func(string, counter) bool { return true }))
	require.Equal(t, 1, b.Len())
	require.Equal(t, "kvstore_test", b.Name())
	require.Zero(t, b.WriteErrors())
}

// TestBucketWritersNeverOverwrite: two views of one bucket (two
// coordinators) increment the same key at once; compare-and-set loses no
// increment, and each view's watch comes to see the total.
func TestBucketWritersNeverOverwrite(t *testing.T) {
	js := newJetStream(t)
	a, b := open(t, js), open(t, js)
	require.NoError(t, a.Create(t.Context(), "k", counter{}))

	const each = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for _, view := range []*kvstore.Bucket[counter]{a, b} {
		wg.Go(func() {
			for range each {
				_, err := view.Update(t.Context(), "k", func(c *counter) error { c.N++; return nil })
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, view := range []*kvstore.Bucket[counter]{a, b} {
		require.Eventually(t, func() bool { got, _ := view.Get("k"); return got.N == 2*each },
			5*time.Second, 10*time.Millisecond, "every increment lands and the watch shows it")
	}
}
