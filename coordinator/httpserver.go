package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The daemon's HTTP listener (DaemonConfig.MetricsListen) serves:
//
//	/metrics  Prometheus metrics (README, Metrics and health)
//	/healthz  200 while the process runs
//	/readyz   200 once the state is loaded and while it can be written;
//	          503 with the reason otherwise
//
// It serves nothing else and takes no input: no token, password or town
// data is ever in what it answers.

// Timeouts of the metrics listener: a scrape is small, so a slow client
// is cut off rather than held.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	// httpShutdownTimeout bounds how long Close waits for scrapes in
	// flight before it closes their connections.
	httpShutdownTimeout = 5 * time.Second
)

// httpServer is the daemon's metrics and health listener.
type httpServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	// ready is set once the daemon has loaded its state and started.
	ready     atomic.Bool
	stopping  atomic.Bool
	check     func() error // why the daemon cannot serve now, or nil
	closeOnce sync.Once
}

// startHTTP listens on addr and serves gatherer's metrics and the health
// endpoints until close. check says, once ready, why the state cannot be
// written (nil when it can).
func startHTTP(addr string, gatherer prometheus.Gatherer, check func() error, log *slog.Logger) (*httpServer, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, errors.WithHint(errors.Wrapf(err, "metrics listen address %q", addr),
			"give host:port, e.g. --metrics-listen 127.0.0.1:9464 (port 0 picks a free one)")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errors.WithHint(errors.Wrapf(err, "listening for metrics on %s", addr),
			"is the address in use by another process, or not one of this machine's? choose another with --metrics-listen")
	}
	h := &httpServer{ln: ln, done: make(chan struct{}), check: check}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { plain(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", h.readyz)
	h.srv = &http.Server{
		Handler: mux, ReadHeaderTimeout: httpReadHeaderTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", KeyErr, err)
		}
	}()
	log.Info("serving metrics and health", "addr", ln.Addr().String())
	return h, nil
}

func (h *httpServer) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case h.stopping.Load():
		plain(w, http.StatusServiceUnavailable, "stopping")
	case !h.ready.Load():
		plain(w, http.StatusServiceUnavailable, "starting: the state is not loaded yet")
	default:
		if err := h.check(); err != nil {
			plain(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		plain(w, http.StatusOK, "ready")
	}
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

// addr is where the listener is bound.
func (h *httpServer) addr() string { return h.ln.Addr().String() }

// close stops serving: scrapes in flight get httpShutdownTimeout to finish.
// Safe to call twice, and on nil.
func (h *httpServer) close() {
	if h == nil {
		return
	}
	h.closeOnce.Do(func() {
		h.stopping.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			_ = h.srv.Close()
		}
		<-h.done
	})
}

// daemonCheck is why the daemon's state cannot be written now, or nil:
// the embedded server's JetStream stopped (a full disk), or the state
// connection is not connected.
func (d *Daemon) daemonCheck() error {
	if err := d.Err(); err != nil {
		return err
	}
	if s := d.sc.Status(); s != nats.CONNECTED {
		return errors.Newf("not connected to NATS (%s)", s)
	}
	return nil
}

// busCollector reads the embedded server's connection counts and refusals
// at each scrape.
type busCollector struct{ srv *bus.Server }

var (
	descConns = prometheus.NewDesc("gastown_connections",
		"Open client connections to the embedded server, by kind: container, recovery (a lapsed token asking for a fresh one), ops, admin, internal (the coordinator's own).",
		[]string{"kind"}, nil)
	descRefused = prometheus.NewDesc("gastown_auth_refusals_total",
		"Connections refused at connect by the embedded server, by reason.", []string{"reason"}, nil)
	descStoreFailed = prometheus.NewDesc("gastown_store_failed",
		"1 once the embedded server's JetStream can no longer store (a full disk): the coordinator stops.", nil, nil)
)

// refusalLabels are short label values for the bus's refusal reasons.
var refusalLabels = map[string]string{
	bus.RefusedNoCredentials:  "no_credentials",
	bus.RefusedUnknownUser:    "unknown_user",
	bus.RefusedInternal:       "internal_from_outside",
	bus.RefusedWrongPassword:  "wrong_password",
	bus.RefusedLockedOut:      "locked_out",
	bus.RefusedTokensDisabled: "tokens_disabled",
	bus.RefusedBadToken:       "bad_token",
	bus.RefusedBadTown:        "bad_town",
	bus.RefusedTownFull:       "town_full",
	bus.RefusedStarting:       "starting",
}

func (b *busCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConns
	ch <- descRefused
	ch <- descStoreFailed
}

func (b *busCollector) Collect(ch chan<- prometheus.Metric) {
	conns := b.srv.ConnectionsByKind()
	for _, k := range bus.ConnKinds {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(conns[k]), k)
	}
	collectRefusals(ch, descRefused, b.srv.Refused())
	failed := 0.0
	if b.srv.Err() != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(descStoreFailed, prometheus.GaugeValue, failed)
}

// collectRefusals sends refused, counted by refusal reason, as desc's
// counters by label: every known label (zero included), and "other" for
// reasons without one when there are any.
func collectRefusals(ch chan<- prometheus.Metric, desc *prometheus.Desc, refused map[string]uint64) {
	byLabel := map[string]uint64{}
	for reason, n := range refused {
		label, ok := refusalLabels[reason]
		if !ok {
			label = otherLabel
		}
		byLabel[label] += n
	}
	for _, label := range refusalLabels {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(byLabel[label]), label)
	}
	if n, ok := byLabel[otherLabel]; ok {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(n), otherLabel)
	}
}
