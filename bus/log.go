package bus

import (
	"context"
	"fmt"
	"log/slog"
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
type serverLog struct{ l *slog.Logger }

func (s serverLog) logf(level slog.Level, format string, v []any) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (s serverLog) Noticef(format string, v ...any) { s.logf(slog.LevelInfo, format, v) }
func (s serverLog) Warnf(format string, v ...any)   { s.logf(slog.LevelWarn, format, v) }
func (s serverLog) Fatalf(format string, v ...any)  { s.logf(slog.LevelError, format, v) }
func (s serverLog) Errorf(format string, v ...any)  { s.logf(slog.LevelError, format, v) }
func (s serverLog) Debugf(format string, v ...any)  { s.logf(slog.LevelDebug, format, v) }
func (s serverLog) Tracef(format string, v ...any)  { s.logf(slog.LevelDebug-4, format, v) }
