package coordinator

import (
	"github.com/gastown/gastown/schemas"
	"github.com/prometheus/client_golang/prometheus"
)

// stateCollector reads, at each scrape, what reflects state: agents and
// beads by status from the caches the KV watches keep true, the leases
// this coordinator holds, store write errors, and what the reply rule and
// the limits refused. Nothing is kept in sync by hand.
type stateCollector struct{ c *Coordinator }

// otherLabel stands for a value outside the known set (a hand-edited
// record), so a label never takes more than a fixed number of values.
const otherLabel = "other"

var (
	descAgents = prometheus.NewDesc("gastown_agents",
		"Agents by role and status, from this coordinator's cache of every town.", []string{"role", "status"}, nil)
	descBeads = prometheus.NewDesc("gastown_beads",
		"Beads by type and status, from this coordinator's cache of every town.", []string{"type", "status"}, nil)
	descLeases = prometheus.NewDesc("gastown_leases_held",
		"Towns whose lease this coordinator holds: it runs their rotation, liveness and patrol.", nil, nil)
	descTowns = prometheus.NewDesc("gastown_towns",
		"Towns in the store.", nil, nil)
	descWriteErrors = prometheus.NewDesc("gastown_store_write_errors_total",
		"State writes that failed (not a lost compare-and-set that was retried), by bucket.", []string{"bucket"}, nil)
	descMisdirected = prometheus.NewDesc("gastown_reply_rule_drops_total",
		"Requests dropped without effect because their reply subject was not the requester's own inbox (the reply rule).", nil, nil)
	descLimits = prometheus.NewDesc("gastown_limit_refusals_total",
		"Requests refused (resource_exhausted) or heartbeats dropped for a town's limits, by limit: rpc_rate, write_rate, busy (calls in flight or a full pool), token_get, heartbeat, storage_cap.",
		[]string{"limit"}, nil)
	descHBDropped = prometheus.NewDesc("gastown_heartbeats_dropped_total",
		"Heartbeats dropped whole, by reason: malformed, other_town (the body names another town), over_limit (the town's heartbeat rate, or a full pool).",
		[]string{"reason"}, nil)
)

var (
	agentRoles    = []string{schemas.RoleMayor, schemas.RolePolecat, schemas.RoleRefinery, schemas.RoleTriage, otherLabel}
	agentStatuses = []string{AgentIdle.String(), AgentWorking.String(), AgentStalled.String(), AgentDead.String(), otherLabel}
	beadTypes     = []string{BeadIssue, BeadMessage, BeadMergeRequest, BeadConvoy, BeadEscalation, otherLabel}
	beadStatuses  = []string{BeadOpen.String(), BeadInProgress.String(), BeadInReview.String(), BeadClosed.String(), BeadFailed.String(), otherLabel}
)

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgents, descBeads, descLeases, descTowns, descWriteErrors, descMisdirected, descLimits, descHBDropped} {
		ch <- d
	}
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c := s.c
	agents := newGrid(agentRoles, agentStatuses)
	c.st.agents.Each(func(a Agent) { agents.add(a.Role, a.Status.String()) })
	agents.emit(ch, descAgents)
	beads := newGrid(beadTypes, beadStatuses)
	c.st.beads.Each(func(b Bead) { beads.add(b.Type, b.Status.String()) })
	beads.emit(ch, descBeads)

	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(c.leases.heldCount()))
	ch <- prometheus.MustNewConstMetric(descTowns, prometheus.GaugeValue, float64(c.st.towns.Len()))
	for _, b := range []interface {
		Name() string
		WriteErrors() uint64
	}{c.tokens.b.Load(), c.st.towns, c.st.rigs, c.st.agents, c.st.beads, c.st.heartbeats, c.leases} {
		ch <- prometheus.MustNewConstMetric(descWriteErrors, prometheus.CounterValue, float64(b.WriteErrors()), b.Name())
	}
	ch <- prometheus.MustNewConstMetric(descMisdirected, prometheus.CounterValue, float64(c.Misdirected()))

	load := c.Load()
	for _, l := range []struct {
		name string
		n    int64
	}{{"rpc_rate", load.RPCRate}, {"write_rate", load.WriteRate}, {"busy", load.Busy}, {"token_get", load.TokenGet},
		{"heartbeat", load.Heartbeats}, {"storage_cap", load.Caps}} {
		ch <- prometheus.MustNewConstMetric(descLimits, prometheus.CounterValue, float64(l.n), l.name)
	}
	var malformed, otherTown uint64
	if m := c.metrics; m != nil {
		malformed, otherTown = m.hbMalformed.Load(), m.hbOtherTown.Load()
	}
	ch <- prometheus.MustNewConstMetric(descHBDropped, prometheus.CounterValue, float64(malformed), "malformed")
	ch <- prometheus.MustNewConstMetric(descHBDropped, prometheus.CounterValue, float64(otherTown), "other_town")
	ch <- prometheus.MustNewConstMetric(descHBDropped, prometheus.CounterValue, float64(load.Heartbeats), "over_limit")
}

// grid counts values by two labels, each limited to a known set.
type grid struct {
	rows, cols []string
	n          map[[2]string]int
}

func newGrid(rows, cols []string) *grid {
	return &grid{rows: rows, cols: cols, n: make(map[[2]string]int, len(rows)*len(cols))}
}

func (g *grid) add(row, col string) {
	g.n[[2]string{known(g.rows, row), known(g.cols, col)}]++
}

// emit sends every cell, zeros included, so a status that empties shows 0
// rather than vanishing.
func (g *grid) emit(ch chan<- prometheus.Metric, d *prometheus.Desc) {
	for _, r := range g.rows {
		for _, c := range g.cols {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(g.n[[2]string{r, c}]), r, c)
		}
	}
}

func known(set []string, v string) string {
	for _, s := range set {
		if s == v {
			return v
		}
	}
	return otherLabel
}
