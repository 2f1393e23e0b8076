package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestReadyz: /readyz is 503 until the daemon says it is ready, 200 then,
// 503 with the reason when the state can no longer be written, and 503
// while stopping; /healthz is 200 throughout.
func TestReadyz(t *testing.T) {
	var broken atomic.Pointer[error]
	h, err := startHTTP("127.0.0.1:0", prometheus.NewRegistry(), func() error {
		if e := broken.Load(); e != nil {
			return *e
		}
		return nil
	}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(h.close)
	base := "http://" + h.addr()

	code, body := httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "not loaded")
	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "alive while starting")

	h.ready.Store(true)
	code, body = httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	full := errors.New("the state can no longer be written: the disk is full")
	broken.Store(&full)
	code, body = httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "disk is full")
	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "still alive")

	code, _ = httpGet(t, base+"/nothing")
	require.Equal(t, http.StatusNotFound, code)

	h.stopping.Store(true)
	code, body = httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "stopping", body)
	h.close()
	h.close()
}
