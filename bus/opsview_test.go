package bus_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// nats-server sends a stream's deletion advisory before it moves the
// deleted stream's files away, so the ops copy the copier makes again at
// once can lose its files to the old copy's deletion: the server then
// refuses to limit the new copy and to store in it. (CI caught it: the
// operator's delete of its copy, by a direct get's empty answer, left the
// copy holding nothing for good.) The copier deletes such a copy and makes
// it again, and it follows the state after.
func TestOpsCopyWhoseFilesWereTakenIsMadeAgain(t *testing.T) {
	if onCluster() {
		t.Skip("needs the embedded server's store directory")
	}
	dir := t.TempDir()
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{OpsPassword: opsPassword, AdminPassword: adminPassword, DataDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	state, err := f.srv.ConnectState(t.Name())
	require.NoError(t, err)
	t.Cleanup(state.Close)
	js, err := jetstream.New(state)
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketTowns})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "A", []byte(`{"townId":"A"}`))
	require.NoError(t, err)
	require.NoError(t, f.srv.StartOpsView(ctx))
	f.waitMirrored(t, schemas.BucketTowns, 1)

	// The old copy's deletion, late, moves the new copy's files away.
	stream := "KV_" + schemas.BucketTowns
	var taken atomic.Bool
	bus.SetOpsCopyMade(t, func(bucket string) {
		if bucket != schemas.BucketTowns || taken.Swap(true) {
			return
		}
		matches, err := filepath.Glob(filepath.Join(dir, "*", "GASTOWN_OPS", "streams", stream))
		if err == nil && len(matches) == 1 {
			_ = os.RemoveAll(matches[0])
		}
	})
	ops := f.connect(t, nats.UserInfo(bus.OpsUser, opsPassword), nats.CustomInboxPrefix(schemas.OpsInbox))
	require.NoError(t, ops.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, "$JS.API.STREAM.DELETE."+stream, []byte(`{"seq":999999}`)))
	require.NoError(t, ops.nc.Flush())
	// Made again when the deletion advisory arrives, or by the copier's
	// next check when it does not: nats-server v2.15.2 queues the advisory
	// on the stream's loop and closes the loop's quit channel right after,
	// and the loop may quit first (seen in a few of 100 runs under load).
	// A copier that was listing the copy's keys when it went waits
	// opsCopyList (= OpsCopyCheck) for the stalled listing first.
	require.Eventually(t, taken.Load, bus.OpsCopyCheck+waitFor, 10*time.Millisecond, "the copy was never made again")

	ctx, cancel = context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err = kv.Put(ctx, "B", []byte(`{"townId":"B"}`))
	require.NoError(t, err)
	opsJS, err := jetstream.New(ops.nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		copyKV, err := opsJS.KeyValue(ctx, schemas.BucketTowns)
		if err != nil {
			return false
		}
		for _, k := range []string{"A", "B"} {
			want, err1 := kv.Get(ctx, k)
			got, err2 := copyKV.Get(ctx, k)
			if err1 != nil || err2 != nil || string(want.Value()) != string(got.Value()) {
				return false
			}
		}
		return true
	}, 3*waitFor, 20*time.Millisecond, "the ops copy whose files were taken never held the state again") // a write the broken store took before the copier knew can go unanswered for 5 s
}
