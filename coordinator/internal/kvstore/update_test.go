package kvstore_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// openOn binds bucket name of T values on a server of its own.
func openOn[T any](tb testing.TB, name string) *kvstore.Bucket[T] {
	tb.Helper()
	js, err := jetstream.New(bustest.ConnectState(tb, bustest.Start(tb, bus.Config{})))
	require.NoError(tb, err)
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tb.Cleanup(func() { cancel(); wg.Wait() })
	b, err := kvstore.Open[T](tb.Context(), runCtx, js, jetstream.KeyValueConfig{Bucket: name, History: 1}, &wg, nil)
	require.NoError(tb, err)
	return b
}

type tagged struct {
	N    int            `json:"n"`
	Tags []string       `json:"tags"`
	Seen map[string]int `json:"seen"`
}

// TestUpdateBuildsOnTheStore: a write made behind the view's back (another
// writer, whose value the view's watch may not have shown yet) is never
// overwritten by an update that started from the view: the
// compare-and-set refuses it and the update reads the store.
func TestUpdateBuildsOnTheStore(t *testing.T) {
	js := newJetStream(t)
	b := open(t, js)
	ctx := t.Context()
	require.NoError(t, b.Create(ctx, "k", counter{N: 1}))
	kv, err := js.KeyValue(ctx, "kvstore_test")
	require.NoError(t, err)
	for i := 2; i <= 20; i += 2 {
		raw, _ := json.Marshal(counter{N: i})
		_, err := kv.Put(ctx, "k", raw) // behind the view's back
		require.NoError(t, err)
		got, err := b.Update(ctx, "k", func(c *counter) error { c.N++; return nil })
		require.NoError(t, err)
		require.Equal(t, i+1, got.N, "the update built on the store's %d", i)
		now, _ := b.Get("k")
		require.Equal(t, i+1, now.N, "the view holds the update's value")
	}
}

// TestUpdateSharesNothingWithTheView: a change that writes into the
// value's slices and maps and is then abandoned leaves the view as it was.
func TestUpdateSharesNothingWithTheView(t *testing.T) {
	b := openOn[tagged](t, "kvstore_tagged")
	ctx := t.Context()
	require.NoError(t, b.Create(ctx, "k", tagged{N: 1, Tags: []string{"a"}, Seen: map[string]int{"x": 1}}))
	_, err := b.Update(ctx, "k", func(v *tagged) error {
		v.Tags[0], v.Seen["x"] = "changed", 99
		return kvstore.ErrStale // abandoned
	})
	require.Error(t, err)
	got, _ := b.Get("k")
	require.Equal(t, tagged{N: 1, Tags: []string{"a"}, Seen: map[string]int{"x": 1}}, got)
}

// BenchmarkBucketUpdate is one read-modify-write of a key the view holds:
// a compare-and-set write (and, before the view's revision was used, a
// read of the store first).
func BenchmarkBucketUpdate(b *testing.B) {
	bk := openOn[counter](b, "kvstore_bench")
	ctx := b.Context()
	for i := range 16 {
		if err := bk.Create(ctx, "k"+strconv.Itoa(i), counter{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := bk.Update(ctx, "k"+strconv.Itoa(i%16), func(c *counter) error { c.N++; return nil }); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
