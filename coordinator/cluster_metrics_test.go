package coordinator_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// TestClusterCalloutMetrics: on a cluster the coordinator's metrics
// count what its auth callout did: grants, refusals answered in the
// first stage (by reason), drops.
func TestClusterCalloutMetrics(t *testing.T) {
	o := startOnCluster(t, 0)
	o.cfg.MetricsListen = "127.0.0.1:0"
	d := o.add()
	for range 3 {
		_, err := o.node(0, nats.Token("garbage"), nats.IgnoreDiscoveredServers())
		require.ErrorIs(t, err, nats.ErrAuthorization)
	}
	_, err := o.node(1, nats.Token(o.token("alpha")))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.MetricsAddr()+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	require.NoError(t, err)
	s := scrape{text: string(b), families: fams}
	require.Equal(t, 3.0, s.must(t, "gastown_callout_requests_total", "outcome", "refused_fast"))
	require.Equal(t, 3.0, s.must(t, "gastown_callout_refusals_total", "reason", "bad_token"))
	require.GreaterOrEqual(t, s.must(t, "gastown_callout_requests_total", "outcome", "granted"), 2.0, "the probe and the container")
	require.Zero(t, s.must(t, "gastown_callout_requests_total", "outcome", "dropped"))
	require.NotContains(t, s.text, "gastown_auth_refusals_total", "the embedded server's refusals are not the callout's")
}
