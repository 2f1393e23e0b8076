package coordinator

import (
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the coordinator's Prometheus instruments and the registry
// they are served from (README, Metrics and health). No metric carries a
// town, agent or bead id: every label has a fixed, small set of values.
// Counters of events are kept as they happen; everything that reflects
// state (agents and beads by status, leases, connections, refusals the bus
// and the limits count) is read from the caches at each scrape.
//
// A nil *Metrics is valid and records nothing, so a coordinator without
// metrics pays one nil check per event. One Metrics serves one
// coordinator.
type Metrics struct {
	reg *prometheus.Registry

	tokensPush, tokensGet prometheus.Counter
	rotPushed, rotAcked   prometheus.Counter
	rotFailed             map[string]prometheus.Counter
	rotLatency            prometheus.Histogram
	revocations           prometheus.Counter

	rpc        map[string]*rpcInstruments
	rpcUnknown *rpcInstruments

	hbReceived, hbStaleLines prometheus.Counter
	// heartbeats dropped before they are looked at, by reason; collected
	// with the limits' drops at scrape time.
	hbMalformed, hbOtherTown atomic.Uint64

	agentsDead, dispatches, dispatchFailures, convoysLanded prometheus.Counter
}

// Reasons a rotation failed: the values of gastown_rotations_failed_total's
// reason label.
const (
	rotFailMint        = "mint"
	rotFailNoContainer = "no_container"
	rotFailNoAnswer    = "no_answer"
	rotFailRefused     = "refused"
)

// rpcUnknownMethod is the method label of calls naming no tool.
const rpcUnknownMethod = "unknown"

// rpcCodeOK is the code label of a call that succeeded.
const rpcCodeOK = "ok"

// rpcCodes are the code label's values.
var rpcCodes = []schemas.Code{
	rpcCodeOK, schemas.CodeUnauthenticated, schemas.CodePermissionDenied, schemas.CodeInvalidArgument, schemas.CodeNotFound,
	schemas.CodeConflict, schemas.CodeResourceExhausted, schemas.CodeUnavailable, schemas.CodeInternal,
}

// rpcLatencyBuckets cover an inline call (tens of µs) to a dispatching
// one (seconds).
var rpcLatencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// rotationLatencyBuckets cover a push to a connected container answered at
// once to one answered at the request timeout.
var rotationLatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// rpcInstruments are one method's, resolved once so that a call costs a
// map lookup and two atomic adds.
type rpcInstruments struct {
	latency prometheus.Observer
	codes   map[schemas.Code]prometheus.Counter
}

// NewMetrics makes the registry with every instrument, the Go runtime's
// and the process's metrics.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		f(c)
		return c
	}
	m := &Metrics{reg: reg, rpc: map[string]*rpcInstruments{}}

	issued := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gastown_tokens_issued_total",
		Help: "Container tokens handed to containers, by how: push (a rotation the container acknowledged) or token.get (answered to the container's request)."}, []string{"how"})
	f(issued)
	m.tokensPush, m.tokensGet = issued.WithLabelValues("push"), issued.WithLabelValues("token.get")
	m.rotPushed = counter("gastown_rotations_pushed_total", "Rotations whose fresh token was sent to the town's container.")
	m.rotAcked = counter("gastown_rotations_acknowledged_total", "Rotations the container acknowledged: it holds the new token.")
	failed := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gastown_rotations_failed_total",
		Help: "Rotations that did not deliver a token, by reason: mint, no_container (none connected), no_answer, refused (the container said no). The town stays due and is tried again."}, []string{"reason"})
	f(failed)
	m.rotFailed = map[string]prometheus.Counter{}
	for _, r := range []string{rotFailMint, rotFailNoContainer, rotFailNoAnswer, rotFailRefused} {
		m.rotFailed[r] = failed.WithLabelValues(r)
	}
	m.rotLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gastown_rotation_duration_seconds",
		Help: "Time from sending a rotation's token to the container's acknowledgement.", Buckets: rotationLatencyBuckets})
	f(m.rotLatency)
	m.revocations = counter("gastown_token_revocations_total", "Revocations of a town's tokens by the administrator.")

	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gastown_rpc_requests_total",
		Help: "Tool calls answered, by method (unknown: no such tool) and code (ok, or the error code the caller got)."}, []string{"method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gastown_rpc_duration_seconds",
		Help: "Time from a tool call's arrival to its answer, by method.", Buckets: rpcLatencyBuckets}, []string{"method"})
	f(calls)
	f(latency)
	for _, method := range append(append([]string(nil), schemas.Tools...), rpcUnknownMethod) {
		in := &rpcInstruments{latency: latency.WithLabelValues(method), codes: map[schemas.Code]prometheus.Counter{}}
		for _, code := range rpcCodes {
			in.codes[code] = calls.WithLabelValues(method, string(code))
		}
		m.rpc[method] = in
	}
	m.rpcUnknown = m.rpc[rpcUnknownMethod]

	m.hbReceived = counter("gastown_heartbeats_received_total", "Heartbeats taken in (past the town's rate limit).")
	m.hbStaleLines = counter("gastown_heartbeat_stale_lines_total", "Heartbeat lines dropped because they named an agent's older run (or no agent).")
	m.agentsDead = counter("gastown_agents_declared_dead_total", "Agent runs declared dead for missed heartbeats.")
	m.dispatches = counter("gastown_dispatches_total", "Dispatches: agent runs recorded and sent to their town's container.")
	m.dispatchFailures = counter("gastown_dispatch_failures_total", "Dispatches that failed (no container, no answer, refused); the agent waits the cooldown.")
	m.convoysLanded = counter("gastown_convoys_landed_total", "Convoys landed: every bead they track closed.")
	return m
}

// Registry is where the metrics are gathered from, to serve or to add
// collectors of one's own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// WithMetrics records the coordinator's metrics in m and adds its state
// collector to m's registry.
func WithMetrics(m *Metrics) Option { return func(c *Coordinator) { c.metrics = m } }

// register adds the coordinator's scrape-time collector; New calls it once
// the state is loaded.
func (m *Metrics) register(c *Coordinator) error {
	if m == nil {
		return nil
	}
	return errors.Wrap(m.reg.Register(&stateCollector{c: c}), "registering the coordinator's metrics (one Metrics serves one coordinator)")
}

func (m *Metrics) tokenGot() {
	if m != nil {
		m.tokensGet.Inc()
	}
}

func (m *Metrics) rotationPushed() {
	if m != nil {
		m.rotPushed.Inc()
	}
}

func (m *Metrics) rotationFailed(reason string) {
	if m != nil {
		m.rotFailed[reason].Inc()
	}
}

func (m *Metrics) rotationAcked(took time.Duration) {
	if m != nil {
		m.rotAcked.Inc()
		m.tokensPush.Inc()
		m.rotLatency.Observe(took.Seconds())
	}
}

func (m *Metrics) revoked() {
	if m != nil {
		m.revocations.Inc()
	}
}

func (m *Metrics) heartbeat() {
	if m != nil {
		m.hbReceived.Inc()
	}
}

func (m *Metrics) heartbeatMalformed() {
	if m != nil {
		m.hbMalformed.Add(1)
	}
}

func (m *Metrics) heartbeatOtherTown() {
	if m != nil {
		m.hbOtherTown.Add(1)
	}
}

func (m *Metrics) heartbeatStaleLine() {
	if m != nil {
		m.hbStaleLines.Inc()
	}
}

func (m *Metrics) agentDead() {
	if m != nil {
		m.agentsDead.Inc()
	}
}

func (m *Metrics) dispatched() {
	if m != nil {
		m.dispatches.Inc()
	}
}

func (m *Metrics) dispatchFailed() {
	if m != nil {
		m.dispatchFailures.Inc()
	}
}

func (m *Metrics) convoyLanded() {
	if m != nil {
		m.convoysLanded.Inc()
	}
}

// rpcCall is one tool call being timed; its zero value (no metrics)
// records nothing.
type rpcCall struct {
	in    *rpcInstruments
	start time.Time
	now   func() time.Time
}

// rpcCall starts timing a call of method (on …rpc.<method> or
// …holder.rpc.<method>).
func (m *Metrics) rpcCall(method string, now func() time.Time) rpcCall {
	if m == nil {
		return rpcCall{}
	}
	in, ok := m.rpc[method]
	if !ok {
		in = m.rpcUnknown
	}
	return rpcCall{in: in, start: now(), now: now}
}

// done records the call's answer: err is what answerRPC was given.
func (r rpcCall) done(err error) {
	if r.in == nil {
		return
	}
	r.in.latency.Observe(r.now().Sub(r.start).Seconds())
	c, ok := r.in.codes[rpcCode(err)]
	if !ok {
		c = r.in.codes[schemas.CodeInternal]
	}
	c.Inc()
}

// rpcCode is the code the caller sees for err (wireError's choice,
// without its log).
func rpcCode(err error) schemas.Code {
	if err == nil {
		return rpcCodeOK
	}
	var e *schemas.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if code := schemas.CodeOf(err); code == schemas.CodeInvalidArgument {
		return code
	}
	return schemas.CodeInternal
}
