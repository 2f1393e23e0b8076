package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Log keys used by this package.
const (
	KeyTown     = "town"
	KeyRemote   = "remote"
	KeyReason   = "reason"
	KeyRecovery = "recovery"
	KeyListen   = "listen"
	KeyDataDir  = "dataDir"
	KeyURL      = "url"
)

// serverLog adapts slog to the nats-server Logger interface.
type serverLog struct {
	l *slog.Logger
	// fatal, when not nil, receives the server's fatal errors (it cannot
	// listen, JetStream did not start). The server only logs them and
	// never becomes ready, so Start watches for them to fail at once.
	fatal chan<- string
	// noSpace, when not nil, receives the server's errors about a full
	// disk: JetStream then refuses every write (it stays up, and never
	// answers them).
	noSpace chan<- string
	// perConn, when not nil, rate-limits the lines about one client
	// connection (serverlog.go).
	perConn *RateLog
}

func (s serverLog) logf(level slog.Level, format string, v []any) {
	if kind, prefix, ok := connLine(format); ok && s.perConn != nil && level >= slog.LevelInfo {
		s.connLog(level, kind, prefix, format, v)
		return
	}
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (s serverLog) Noticef(format string, v ...any) { s.logf(slog.LevelInfo, format, v) }
func (s serverLog) Warnf(format string, v ...any)   { s.logf(slog.LevelWarn, format, v) }
func (s serverLog) Errorf(format string, v ...any) {
	s.logf(slog.LevelError, format, v)
	if msg := fmt.Sprintf(format, v...); s.noSpace != nil && strings.Contains(msg, "no space left on device") {
		select {
		case s.noSpace <- msg:
		default: // the first one is enough
		}
	}
}
func (s serverLog) Debugf(format string, v ...any) { s.logf(slog.LevelDebug, format, v) }
func (s serverLog) Tracef(format string, v ...any) { s.logf(slog.LevelDebug-4, format, v) }

// Fatalf logs and, when Start is watching, tells it the server gave up.
func (s serverLog) Fatalf(format string, v ...any) {
	s.logf(slog.LevelError, format, v)
	if s.fatal != nil {
		select {
		case s.fatal <- fmt.Sprintf(format, v...):
		default: // the first one is enough
		}
	}
}

// PlainErrors is a slog ReplaceAttr that logs an error as its message on
// one line (slog would print its %+v form: a multi-line stack trace).
func PlainErrors(_ []string, a slog.Attr) slog.Attr {
	if err, ok := a.Value.Any().(error); ok && a.Value.Kind() == slog.KindAny {
		return slog.String(a.Key, err.Error())
	}
	return a
}
