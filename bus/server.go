package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Defaults of the embedded server.
const (
	DefaultListen  = "127.0.0.1:4222"
	DefaultDataDir = "./data"
	// readyTimeout bounds how long Start waits for the server to accept.
	readyTimeout = 30 * time.Second
)

// ErrStart marks every failure to start the embedded server.
var ErrStart = errors.New("embedded NATS server did not start")

// Config configures the embedded server.
type Config struct {
	// Listen is host:port for client connections; port 0 picks a free one.
	Listen string
	// DataDir is where JetStream keeps its file store. Start locks it
	// (LockFile) until Close, so a second server on it is refused.
	DataDir string
	// Owner names this process in the data directory's lock file, so a
	// second start on the directory can say who holds it (e.g. "gastown
	// coordinator"); empty means the program's name.
	Owner string
	// Tokens verifies container tokens at connect. Nil refuses all tokens.
	Tokens TokenAuthorizer
	// OpsPassword enables the ops identity when not empty.
	OpsPassword string
	// AdminPassword enables the admin identity when not empty.
	AdminPassword string
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// Debug passes the server's debug lines to Logger. The server's trace
	// (which would print message bodies, and so tokens) is never enabled.
	Debug bool
	// Limits throttle password guesses, rate-limit the logs of refusals
	// and cap each town's connections (limits.go); zero fields take
	// their defaults.
	Limits
	// TLS, when its files are set, makes the client port speak TLS
	// (tls.go). Off by default.
	TLS TLS
	// MonitorListen is host:port of the server's HTTP monitoring endpoint
	// (/varz, /connz, /subsz, /jsz, ...); empty (the default) leaves it
	// off. It has no authentication: keep it on loopback.
	MonitorListen string
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	ns             *server.Server
	auth           *authenticator
	internalSecret string
	log            *slog.Logger
	dataDir        string
	closeOnce      sync.Once
	stop           chan struct{}
	// failed is closed once err says why JetStream can no longer store.
	failed chan struct{}
	err    error
	// wg holds the goroutines Close waits for.
	wg sync.WaitGroup
	// lock holds the data directory's flock until Close.
	lock *os.File
	// quiet demotes the server's notices to debug while it starts and
	// stops (serverLog).
	quiet *atomic.Bool
	// ops is the copier of the state into the ops account, once started.
	opsMu sync.Mutex
	ops   *opsView
}

// jetStreamCheck is how often a running server is checked for JetStream
// having stopped under it.
const jetStreamCheck = 250 * time.Millisecond

// Start starts the embedded server and waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, errors.Mark(errors.WithHint(errors.Wrapf(err, "listen address %q", cfg.Listen), "give host:port, e.g. 127.0.0.1:4222"), ErrStart)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, errors.Mark(errors.Newf("listen address %q has a bad port", cfg.Listen), ErrStart)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	limits, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, errors.Mark(errors.Wrap(err, "bus limits"), ErrStart)
	}
	// TLS and monitoring are checked before anything is made on disk.
	var exposure networkOptions
	if err := exposure.load(cfg); err != nil {
		return nil, errors.Mark(err, ErrStart)
	}
	if cfg.Owner == "" {
		cfg.Owner = lockOwner()
	}
	storeDir, lock, err := prepareDataDir(cfg.DataDir, cfg.Owner)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			_ = lock.Close() // every failure below has shut the server down
		}
	}()
	secret, err := randomSecret()
	if err != nil {
		return nil, err
	}
	auth := &authenticator{
		tokens:         cfg.Tokens,
		opsPassword:    cfg.OpsPassword,
		adminPassword:  cfg.AdminPassword,
		internalSecret: secret,
		log:            cfg.Logger,
	}
	auth.authLimits = newAuthLimits(limits, cfg.Logger)
	opts := &server.Options{
		ServerName:                 "gastown",
		Host:                       host,
		Port:                       port,
		JetStream:                  true,
		StoreDir:                   storeDir,
		MaxPayload:                 schemas.MaxBodySize + 64<<10, // room for headers
		NoSigs:                     true,
		NoSystemAccount:            false,
		Debug:                      cfg.Debug,
		Trace:                      false,
		CustomClientAuthentication: auth,
	}
	exposure.applyTo(opts)
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, errors.Mark(errors.Wrap(err, "configuring embedded NATS server"), ErrStart)
	}
	auth.live = func(id uint64) bool { return ns.GetClient(id) != nil }
	fatal, noSpace := make(chan string, 1), make(chan string, 1)
	quiet := new(atomic.Bool)
	quiet.Store(true) // until ready: the banners and restores go to debug
	ns.SetLoggerV2(serverLog{l: cfg.Logger, fatal: fatal, noSpace: noSpace, perConn: NewRateLog(cfg.Logger, limits.LogInterval, limits.Now), quiet: quiet}, cfg.Debug, false, false)
	go ns.Start()
	deadline := time.Now().Add(readyTimeout)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		var failed error
		select {
		case msg := <-fatal:
			// The server gave up (it could not listen, or JetStream did
			// not start) and will never be ready: say why now.
			failed = errors.WithHint(errors.Newf("embedded NATS server failed: %s", msg), fatalHint(msg))
		default:
			switch {
			case ctx.Err() != nil:
				failed = errors.Wrap(ctx.Err(), "starting embedded NATS server")
			case time.Now().After(deadline):
				failed = errors.WithHint(errors.Newf("not accepting connections on %s after %s", cfg.Listen, readyTimeout),
					"is the address in use by another process? choose another with --listen")
			}
		}
		if failed != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, errors.Mark(failed, ErrStart)
		}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.Mark(errors.WithHint(errors.Newf("JetStream did not start on %s", cfg.DataDir),
			"check that the data directory is writable and the disk is not full"), ErrStart)
	}
	accs, err := setupAccounts(ns)
	if err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.Mark(err, ErrStart)
	}
	auth.accounts.Store(accs)
	s := &Server{ns: ns, auth: auth, internalSecret: secret, log: cfg.Logger, dataDir: storeDir, lock: lock, quiet: quiet,
		stop: make(chan struct{}), failed: make(chan struct{})}
	started = true
	go s.watchJetStream(noSpace)
	s.wg.Go(func() { s.sweepConns(limits.ConnSweep) })
	quiet.Store(false)
	s.log.Info("embedded NATS server ready", KeyURL, s.ClientURL(), KeyDataDir, storeDir)
	s.warnExposure(cfg, host)
	return s, nil
}

// watchJetStream reports on Failed when JetStream can no longer store
// anything while the server runs: a write found the disk full (the server
// logs it, refuses that write and every later one, and never answers
// them), or JetStream stopped altogether. Every state write would wait for
// its deadline; the coordinator stops instead, saying what to do.
func (s *Server) watchJetStream(noSpace <-chan string) {
	t := time.NewTicker(jetStreamCheck)
	defer t.Stop()
	var cause string
	for cause == "" {
		select {
		case <-s.stop:
			return
		case msg := <-noSpace:
			cause = "the disk holding " + s.dataDir + " is full (" + msg + ")"
		case <-t.C:
			if !s.ns.JetStreamEnabled() {
				cause = "JetStream stopped; the disk holding " + s.dataDir + " may be full or failing"
			}
		}
	}
	s.err = errors.Mark(errors.WithHint(errors.Newf("the state can no longer be written: %s", cause),
		"free some disk space (or move --data-dir to a disk with room), then start the coordinator again; what was written so far is kept"), ErrJetStreamStopped)
	close(s.failed)
}

// ErrJetStreamStopped marks the error of a server whose JetStream can no
// longer store anything.
var ErrJetStreamStopped = errors.New("JetStream cannot store")

// Failed is closed if JetStream can no longer store anything while the
// server runs (a full disk): the server must be restarted once the cause
// is fixed. Err says why.
func (s *Server) Failed() <-chan struct{} { return s.failed }

// Err is why Failed was closed, or nil while it is open.
func (s *Server) Err() error {
	select {
	case <-s.failed:
		return s.err
	default:
		return nil
	}
}

// fatalHint says what to do about a fatal error of the server.
func fatalHint(msg string) string {
	switch {
	case strings.Contains(msg, "JetStream"):
		return "check that the data directory is writable and the disk is not full, or choose another with --data-dir"
	case strings.Contains(strings.ToLower(msg), "monitor"):
		return "is the monitoring address in use by another process? choose another with --monitor-listen"
	case strings.Contains(msg, "listen"):
		return "is the address in use by another process? choose another with --listen"
	}
	return "see the server's log above"
}

// prepareDataDir makes the data directory, locks it (before anything else
// touches it: a directory in use is refused unchanged), and checks it is
// writable, so a read-only or full disk is reported at start with what to
// do. Closing the returned file releases the lock.
func prepareDataDir(dir, owner string) (string, *os.File, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, errors.Mark(errors.Wrapf(err, "data directory %q", dir), ErrStart)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", nil, errors.Mark(errors.WithHint(errors.Wrapf(err, "creating data directory %s", abs),
			"choose a writable directory with --data-dir"), ErrStart)
	}
	lock, err := lockDataDir(abs, dir, owner)
	if err != nil {
		return "", nil, err
	}
	probe, err := os.CreateTemp(abs, ".write-probe-*")
	if err != nil {
		_ = lock.Close()
		return "", nil, errors.Mark(errors.WithHint(errors.Wrapf(err, "data directory %s is not writable", abs),
			"choose a writable directory with --data-dir, or free some disk space"), ErrStart)
	}
	name := probe.Name()
	_, werr := probe.Write(make([]byte, 4096))
	cerr := probe.Close()
	_ = os.Remove(name)
	if werr != nil || cerr != nil {
		_ = lock.Close()
		return "", nil, errors.Mark(errors.WithHint(errors.Wrapf(errors.CombineErrors(werr, cerr), "writing to data directory %s", abs),
			"free some disk space or choose another directory with --data-dir"), ErrStart)
	}
	return abs, lock, nil
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", errors.Wrap(err, "making the in-process secret")
	}
	return hex.EncodeToString(b), nil
}

// ClientURL is the URL containers connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ns.Addr() }

// Connect opens an in-process connection with every permission in the
// control account, for tests and in-process tools; give it the inbox
// prefix of the identity it stands for (nats.CustomInboxPrefix), since the
// coordinator answers only there. Its default inbox prefix is
// schemas.CoordinatorInbox.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.connectAs(internalUser, name, opts...)
}

// ConnectCoordinator opens the coordinator's control connection: in the
// control account, with CoordinatorPermissions.
func (s *Server) ConnectCoordinator(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.connectAs(coordinatorUser, name, opts...)
}

// ConnectState opens the coordinator's state connection: in the state
// account, where JetStream keeps the buckets, with StatePermissions.
func (s *Server) ConnectState(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.connectAs(stateUser, name, opts...)
}

// Close shuts the server down and waits for it, flushing JetStream's store.
// It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.stopOpsView()
		s.wg.Wait()
		s.quiet.Store(true) // the server's own shutdown notices go to debug
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		_ = s.lock.Close() // the store is flushed: the directory is free
		s.log.Info("embedded NATS server stopped")
	})
}

// NumClients is the number of client connections, for tests and status.
func (s *Server) NumClients() int { return s.ns.NumClients() }

// Kick closes every connection of town whose token was issued before
// issuedBefore, and returns how many it closed.
func (s *Server) Kick(townID string, issuedBefore time.Time) int {
	s.auth.mu.Lock()
	s.auth.revokeLocked(townID, issuedBefore)
	var ids []uint64
	for id, c := range s.auth.conns {
		if s.ns.GetClient(id) == nil {
			s.auth.forgetLocked(id) // gone already
			continue
		}
		if c.town == townID && c.issuedAt.Before(issuedBefore) {
			ids = append(ids, id)
			s.auth.forgetLocked(id)
		}
	}
	s.auth.mu.Unlock()
	n := 0
	for _, id := range ids {
		if s.ns.DisconnectClientByID(id) == nil {
			n++
		}
	}
	if n > 0 {
		s.log.Info("closed connections using revoked tokens", KeyTown, townID, "count", n)
	}
	return n
}
