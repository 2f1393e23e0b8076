package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// rpcTown is the town of the RPC measurements.
const rpcTown = "bench"

// system is one way of making the ping call.
type system struct {
	name string
	call func(ctx context.Context) error
}

// measurement is what callers of one system did.
type measurement struct {
	calls    int
	errors   int
	firstErr error
	elapsed  time.Duration
	cpu      time.Duration // process CPU while measuring
	lat      []time.Duration
}

func (m *measurement) add(o measurement) {
	m.calls += o.calls
	m.errors += o.errors
	if m.firstErr == nil {
		m.firstErr = o.firstErr
	}
	m.elapsed += o.elapsed
	m.cpu += o.cpu
	m.lat = append(m.lat, o.lat...)
}

// throughput is successful calls per second.
func (m measurement) throughput() float64 {
	if m.elapsed <= 0 {
		return 0
	}
	return float64(m.calls) / m.elapsed.Seconds()
}

// cpuPerCall is the process CPU (every goroutine: callers, server,
// responder) per successful call, in microseconds.
func (m measurement) cpuPerCall() float64 {
	if m.calls == 0 {
		return 0
	}
	return float64(m.cpu.Nanoseconds()) / 1000 / float64(m.calls)
}

// cores is how many cores the process kept busy on average.
func (m measurement) cores() float64 { return m.cpu.Seconds() / m.elapsed.Seconds() }

// percentile of the latencies, in microseconds; lat must be sorted.
func (m measurement) percentile(p float64) float64 {
	if len(m.lat) == 0 {
		return 0
	}
	i := min(int(float64(len(m.lat))*p), len(m.lat)-1)
	return float64(m.lat[i].Nanoseconds()) / 1000
}

// measure runs workers callers of call until dur has passed and collects
// every call's latency. The elapsed time runs until the last caller stops.
func measure(ctx context.Context, call func(context.Context) error, workers int, dur time.Duration) measurement {
	cpu0 := cpuTime()
	start := time.Now()
	end := start.Add(dur)
	parts := make([]measurement, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p := &parts[w]
			p.lat = make([]time.Duration, 0, 1<<12)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := call(ctx)
				d := time.Since(t0)
				if err != nil {
					p.errors++
					if p.firstErr == nil {
						p.firstErr = err
					}
					continue
				}
				p.calls++
				p.lat = append(p.lat, d)
			}
		})
	}
	wg.Wait()
	var m measurement
	for _, p := range parts {
		m.add(p)
	}
	m.elapsed = time.Since(start)
	m.cpu = cpuTime() - cpu0
	return m
}

// rpcSystems are the three ways to make the call, and how to stop them.
type rpcSystems struct {
	bus, plain, http system
	stop             []func()
}

func (s *rpcSystems) close() {
	for i := len(s.stop) - 1; i >= 0; i-- {
		s.stop[i]()
	}
}

// startRPCSystems starts a coordinator daemon with a connected container
// (bus), a plain nats-server with a responder (plain), and an HTTP server
// with a bearer-token middleware (http), all on 127.0.0.1.
func startRPCSystems(ctx context.Context) (s *rpcSystems, err error) {
	s = &rpcSystems{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	// Our system: a real daemon, a container token source over TCP, and
	// the tool client with no agent identity (container-level ping).
	// The town's tool-call rate is lifted: the limiter is on the path of
	// every call and measured, but 64 callers as fast as they can are far
	// over any town's rate (the fairness phase runs with the defaults).
	d, err := startDaemon(ctx, newSecret(), "", func(c *coordinator.Config) { c.Limits.RPCRate = 1e9 })
	if err != nil {
		return s, fmt.Errorf("starting the coordinator: %w", err)
	}
	s.stop = append(s.stop, d.close)
	if err := admin(ctx, d.Conn(), "town.create", map[string]string{"townId": rpcTown}, nil); err != nil {
		return s, fmt.Errorf("creating town: %w", err)
	}
	tok, err := d.containerToken(rpcTown)
	if err != nil {
		return s, err
	}
	src, err := agentclient.Start(ctx, agentclient.Config{URL: d.URL(), Token: tok, ContainerID: "bench-container", Logger: discard})
	if err != nil {
		return s, fmt.Errorf("connecting the container: %w", err)
	}
	s.stop = append(s.stop, src.Close)
	client := agentclient.NewClient(src, "", "")
	s.bus = system{name: "bus", call: pingCall(client)}

	// The reply ping sends, byte for byte.
	reply, err := schemas.ResultReply(schemas.PingResult{TownID: rpcTown})
	if err != nil {
		return s, err
	}
	subject, _ := mustTown(rpcTown).RPC(schemas.ToolPing)

	// Plain request/reply: a nats-server with no auth and no JetStream, a
	// responder with a fixed reply, and a client over TCP sending the same
	// message (subject, headers and body) that the tool client sends.
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		return s, err
	}
	go ns.Start()
	s.stop = append(s.stop, func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		return s, fmt.Errorf("plain nats-server not ready")
	}
	// The responder connects in-process, as the coordinator does to its
	// embedded server; only the caller goes over TCP, in both systems.
	responder, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("plain-responder"))
	if err != nil {
		return s, err
	}
	s.stop = append(s.stop, responder.Close)
	if _, err := responder.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
		return s, err
	}
	if err := responder.Flush(); err != nil {
		return s, err
	}
	plain, err := nats.Connect(ns.ClientURL(), nats.Name("plain-client"), nats.CustomInboxPrefix(mustTown(rpcTown).Inbox()))
	if err != nil {
		return s, err
	}
	s.stop = append(s.stop, plain.Close)
	s.plain = system{name: "plain", call: plainCall(plain, subject, tok)}

	// The seed's way: HTTP with a bearer-token middleware that verifies the
	// JWT on every request (no cache), the same JSON reply.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /towns/{town}/rpc/{method}", bearerAuth(d.issuer, http.HandlerFunc(httpPing)))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = hs.Serve(ln) }()
	s.stop = append(s.stop, func() { _ = hs.Close() })
	tr := &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	s.stop = append(s.stop, tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + "/towns/" + rpcTown + "/rpc/" + schemas.ToolPing
	s.http = system{name: "http", call: func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte("{}")))
		if err != nil {
			return err
		}
		req.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, data)
		}
		res, err := schemas.DecodeReply(data)
		if err != nil {
			return err
		}
		var out schemas.PingResult
		if err := json.Unmarshal(res, &out); err != nil {
			return err
		}
		if out.TownID != rpcTown {
			return fmt.Errorf("ping answered for town %q", out.TownID)
		}
		return nil
	}}
	return s, nil
}

func mustTown(id string) schemas.Town {
	t, err := schemas.ForTown(id)
	if err != nil {
		panic(err)
	}
	return t
}

type verifiedKey struct{}

// httpStatus maps error codes to HTTP statuses (PROTOCOL.md, RPC).
var httpStatus = map[schemas.Code]int{
	schemas.CodeUnauthenticated:  http.StatusUnauthorized,
	schemas.CodePermissionDenied: http.StatusForbidden,
	schemas.CodeInvalidArgument:  http.StatusBadRequest,
}

func httpError(w http.ResponseWriter, code schemas.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(schemas.ErrorHeader, string(code))
	w.WriteHeader(httpStatus[code])
	_, _ = w.Write(schemas.ErrorReply(schemas.NewError(code, "%s", msg)))
}

// bearerAuth is the seed's middleware: the JWT is verified with
// Issuer.Verify on every request and must be for the path's town.
func bearerAuth(iss *token.Issuer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get(schemas.AuthorizationHeader), schemas.BearerPrefix)
		if !ok || tok == "" {
			httpError(w, schemas.CodeUnauthenticated, "no bearer token in the Authorization header")
			return
		}
		v, err := iss.Verify(tok)
		if err != nil {
			httpError(w, schemas.CodeUnauthenticated, "token is not valid")
			return
		}
		if v.TownID() != r.PathValue("town") {
			httpError(w, schemas.CodePermissionDenied, "token is for another town")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedKey{}, v)))
	})
}

// httpPing is ping over HTTP: the same checks of the body, the same reply.
func httpPing(w http.ResponseWriter, r *http.Request) {
	v := r.Context().Value(verifiedKey{}).(token.Verified)
	body, err := io.ReadAll(io.LimitReader(r.Body, schemas.MaxBodySize+1))
	if err != nil || len(body) > schemas.MaxBodySize || (len(body) > 0 && !json.Valid(body)) {
		httpError(w, schemas.CodeInvalidArgument, "body is not JSON")
		return
	}
	b, err := schemas.ResultReply(map[string]string{"townId": v.TownID(), "agentId": r.Header.Get(schemas.AgentIDHeader)})
	if err != nil {
		http.Error(w, "internal", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// benchRPC measures ping through the bus middleware, plain NATS request/
// reply and HTTP, sequentially and with concurrent callers. Each system's
// time is cut into rounds, interleaved (in a rotating order) with the
// others', so that a noisy neighbour hurts all three alike.
func benchRPC(ctx context.Context, o options) ([]Result, error) {
	s, err := startRPCSystems(ctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	// Calls need a deadline (nats.go refuses a request without one); one
	// for the whole phase keeps a timer per call out of every system.
	ctx, cancel := context.WithTimeout(ctx, 10*o.duration+5*time.Minute)
	defer cancel()
	systems := []system{s.plain, s.bus, s.http}
	var results []Result
	for _, workers := range []int{1, o.concurrency} {
		label := "seq"
		if workers > 1 {
			label = fmt.Sprintf("c%d", workers)
		}
		for _, sys := range systems {
			if m := measure(ctx, sys.call, workers, 300*time.Millisecond); m.calls == 0 {
				return results, fmt.Errorf("%s warm-up: no call succeeded: %v", sys.name, m.firstErr)
			}
		}
		got := map[string]*measurement{}
		for _, sys := range systems {
			got[sys.name] = &measurement{}
		}
		slice := o.duration / time.Duration(o.rounds)
		for r := range o.rounds {
			for i := range systems {
				sys := systems[(i+r)%len(systems)]
				progress("rpc %s %s round %d/%d", label, sys.name, r+1, o.rounds)
				got[sys.name].add(measure(ctx, sys.call, workers, slice))
			}
		}
		for _, m := range got {
			slices.Sort(m.lat)
			if m.calls == 0 {
				return results, fmt.Errorf("rpc %s: no call succeeded: %v", label, m.firstErr)
			}
		}
		results = append(results, rpcResults(label, workers, got["bus"], got["plain"], got["http"])...)
	}
	if o.cpuProfile != "" {
		sys := map[string]system{"bus": s.bus, "plain": s.plain, "http": s.http}[o.profileOf]
		if err := profileRPC(ctx, o, sys); err != nil {
			return results, err
		}
	}
	return results, nil
}

func rpcResults(label string, workers int, bus, plain, hp *measurement) []Result {
	callers := "1 caller"
	if workers > 1 {
		callers = fmt.Sprintf("%d callers sharing one connection (HTTP: up to %d keep-alive connections)", workers, workers)
	}
	errNote := func(m *measurement) string {
		note := fmt.Sprintf("; the process kept %.2f cores busy", m.cores())
		if m.errors == 0 {
			return note
		}
		return note + fmt.Sprintf("; %d calls failed (first: %v)", m.errors, m.firstErr)
	}
	n := func(sys, metric string) string { return "rpc." + label + "." + sys + "." + metric }
	const ratioTarget = 0.8
	busTP := Result{Name: n("bus", "throughput"), Value: bus.throughput(), Unit: "req/s",
		Note: fmt.Sprintf("ping through the coordinator's RPC middleware, container token over TCP, %s, %d calls%s; baseline: plain NATS request/reply", callers, bus.calls, errNote(bus))}.
		withBaseline(plain.throughput())
	busTP = busTP.judged(fmt.Sprintf(">= %.1fx plain", ratioTarget), *busTP.Ratio >= ratioTarget)
	return []Result{
		{Name: n("plain", "throughput"), Value: plain.throughput(), Unit: "req/s",
			Note: fmt.Sprintf("plain nats-server (no auth, no JetStream), in-process responder with a fixed reply, caller over TCP sending the same message and headers, %s, %d calls%s", callers, plain.calls, errNote(plain))},
		{Name: n("plain", "p50"), Value: plain.percentile(0.50), Unit: "µs"},
		{Name: n("plain", "p99"), Value: plain.percentile(0.99), Unit: "µs"},
		{Name: n("plain", "cpu-per-call"), Value: plain.cpuPerCall(), Unit: "µs CPU",
			Note: "process CPU (callers, server, responder) per call: steadier than throughput on a shared machine"},
		busTP,
		Result{Name: n("bus", "p50"), Value: bus.percentile(0.50), Unit: "µs"}.withBaseline(plain.percentile(0.50)),
		Result{Name: n("bus", "p99"), Value: bus.percentile(0.99), Unit: "µs"}.withBaseline(plain.percentile(0.99)),
		Result{Name: n("bus", "cpu-per-call"), Value: bus.cpuPerCall(), Unit: "µs CPU",
			Note: fmt.Sprintf("baseline: plain; were the process CPU-bound, bus throughput would be %.2fx plain", plain.cpuPerCall()/bus.cpuPerCall())}.withBaseline(plain.cpuPerCall()),
		{Name: n("http", "throughput"), Value: hp.throughput(), Unit: "req/s",
			Note: fmt.Sprintf("the seed's way: net/http on loopback, Issuer.Verify on every request, %s, %d calls%s", callers, hp.calls, errNote(hp))},
		{Name: n("http", "p50"), Value: hp.percentile(0.50), Unit: "µs"},
		{Name: n("http", "p99"), Value: hp.percentile(0.99), Unit: "µs"},
		{Name: n("http", "cpu-per-call"), Value: hp.cpuPerCall(), Unit: "µs CPU"},
		Result{Name: n("bus-vs-http", "throughput"), Value: bus.throughput(), Unit: "req/s",
			Note: "bus RPC against the HTTP baseline (ratio > 1: the bus is faster)"}.withBaseline(hp.throughput()),
		Result{Name: n("bus-vs-http", "p50"), Value: bus.percentile(0.50), Unit: "µs"}.withBaseline(hp.percentile(0.50)),
		Result{Name: n("bus-vs-http", "p99"), Value: bus.percentile(0.99), Unit: "µs"}.withBaseline(hp.percentile(0.99)),
		Result{Name: n("bus-vs-http", "cpu-per-call"), Value: bus.cpuPerCall(), Unit: "µs CPU"}.withBaseline(hp.cpuPerCall()),
	}
}

// profileRPC writes a CPU profile of an extra run of one system (the bus,
// unless -cpuprofile-system says otherwise) with concurrent callers: the
// whole process, client, NATS server and middleware.
func profileRPC(ctx context.Context, o options, sys system) error {
	f, err := os.Create(o.cpuProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	progress("rpc: profiling %s with %d callers for %s into %s", sys.name, o.concurrency, o.duration, o.cpuProfile)
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	m := measure(ctx, sys.call, o.concurrency, o.duration)
	pprof.StopCPUProfile()
	progress("rpc: profiled run: %.0f req/s", m.throughput())
	return f.Close()
}

// plainCall is one plain request on subject with the bus's headers and
// body, answered by a responder with the fixed ping reply.
func plainCall(requester *nats.Conn, subject, tok string) func(context.Context) error {
	return func(ctx context.Context) error {
		m := nats.NewMsg(subject)
		m.Data = []byte("{}")
		m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
		r, err := requester.RequestMsgWithContext(ctx, m)
		if err != nil {
			return err
		}
		if len(r.Data) == 0 {
			return fmt.Errorf("empty reply")
		}
		return nil
	}
}

// pingCall is one ping through the tool client, checked for its town.
func pingCall(client *agentclient.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		var out schemas.PingResult
		if err := client.Call(ctx, schemas.ToolPing, nil, &out); err != nil {
			return err
		}
		if out.TownID != rpcTown {
			return fmt.Errorf("ping answered for town %q", out.TownID)
		}
		return nil
	}
}
