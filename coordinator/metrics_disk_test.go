//go:build linux

package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestReadyzWhenDiskFull: once the disk fills under a running coordinator,
// /readyz answers 503 saying why, gastown_store_failed is 1 and the failed
// writes are counted, while /healthz still answers 200.
func TestReadyzWhenDiskFull(t *testing.T) {
	mnt := mountTmpfs(t)
	h := coordinatortest.StartIn(t, coordinator.Config{RequestTimeout: time.Second}, filepath.Join(mnt, "data"), withMetrics)
	slingOne(t, h)
	code, body := get(t, h, "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	fill(t, mnt)

	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; h.Daemon.Err() == nil; i++ {
		require.True(t, time.Now().Before(deadline), "no failure reported after %d writes to a full disk", i)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		b, _ := json.Marshal(schemas.BeadCreate{TownID: "T", BeadID: fmt.Sprintf("b%d", i), RigID: "r", Title: strings.Repeat("x", 2000)})
		_ = bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: "gastown.admin." + schemas.AdminBeadCreate, Data: b}, nil)
		cancel()
	}
	code, body = get(t, h, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "full")
	code, _ = get(t, h, "/healthz")
	require.Equal(t, http.StatusOK, code)
	s := scrapeMetrics(t, h)
	require.Equal(t, 1.0, s.must(t, "gastown_store_failed"))
}
