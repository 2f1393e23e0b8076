package coordinator

import (
	"testing"
	"time"

	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// The RPC hot path's instruments: one call of a known method costs a map
// lookup, two clock reads, a histogram observation and a counter add; an
// unknown method is counted as "unknown"; a nil Metrics costs nothing.
func TestRPCCallInstruments(t *testing.T) {
	m := NewMetrics()
	m.rpcCall(schemas.ToolPing, time.Now).done(nil)
	m.rpcCall("no.such", time.Now).done(schemas.NewError(schemas.CodeNotFound, "no"))
	var none *Metrics
	none.rpcCall("ping", time.Now).done(nil)
	none.rotationAcked(time.Second)

	fams, err := m.reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "gastown_rpc_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := ""
			for _, l := range s.GetLabel() {
				labels += l.GetName() + "=" + l.GetValue() + " "
			}
			if v := s.GetCounter().GetValue(); v > 0 {
				got[labels] = v
			}
		}
	}
	require.Equal(t, map[string]float64{"code=ok method=ping ": 1, "code=not_found method=unknown ": 1}, got)
}

func BenchmarkRPCCallInstruments(b *testing.B) {
	m := NewMetrics()
	b.ReportAllocs()
	for b.Loop() {
		m.rpcCall(schemas.ToolPing, time.Now).done(nil)
	}
}
