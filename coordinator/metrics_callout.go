package coordinator

import (
	"github.com/gastown/gastown/bus"
	"github.com/prometheus/client_golang/prometheus"
)

// calloutCollector reads the cluster's auth callout counters at each
// scrape (cluster mode: the embedded server's are busCollector's).
type calloutCollector struct{ c *bus.Callout }

var (
	descCalloutRequests = prometheus.NewDesc("gastown_callout_requests_total",
		"Authorization requests this coordinator's auth callout answered on a cluster, by outcome: granted, refused_fast (refused in the first stage, nothing signed), dropped (unanswered: unreadable, badly signed or sealed with another key).",
		[]string{"outcome"}, nil)
	descCalloutRefused = prometheus.NewDesc("gastown_callout_refusals_total",
		"Connections this coordinator's auth callout refused on a cluster, by reason.", []string{"reason"}, nil)
)

func (cc *calloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCalloutRequests
	ch <- descCalloutRefused
}

func (cc *calloutCollector) Collect(ch chan<- prometheus.Metric) {
	n := cc.c.Counts()
	for outcome, v := range map[string]uint64{"granted": n.Granted, "refused_fast": n.RefusedFast, "dropped": n.Dropped} {
		ch <- prometheus.MustNewConstMetric(descCalloutRequests, prometheus.CounterValue, float64(v), outcome)
	}
	collectRefusals(ch, descCalloutRefused, cc.c.Refused())
}
