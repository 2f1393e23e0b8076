package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats-server/v2/server"
)

// connLog writes a server line about one client connection. Their number
// is the clients' to decide (a refused connection, a protocol error, a
// permissions violation each make one), so they are rate-limited by kind:
// the format without the client's prefix. The server's line for a refused
// connection repeats what the authenticator logged (with its reason), and
// names the user given, which may be a mistyped secret: it goes to debug,
// without the name.
func (s serverLog) connLog(level slog.Level, kind, prefix, format string, v []any) {
	ctx := context.Background()
	if isAuthError(kind, v) {
		if s.l.Enabled(ctx, slog.LevelDebug) {
			s.l.Log(ctx, slog.LevelDebug, fmt.Sprintf(prefix+" - %v", server.ErrAuthentication))
		}
		return
	}
	if !s.l.Enabled(ctx, level) {
		return
	}
	s.perConn.Log(ctx, level, kind, fmt.Sprintf(format, v...))
}

// connLine splits the format of a server line about one client
// connection, "<address> - cid:<n> - <kind>", into its prefix and kind.
func connLine(format string) (kind, prefix string, ok bool) {
	const cid = " - cid:"
	i := strings.Index(format, cid)
	if i < 0 {
		return "", "", false
	}
	j := i + len(cid)
	n := j
	for n < len(format) && format[n] >= '0' && format[n] <= '9' {
		n++
	}
	if n == j || !strings.HasPrefix(format[n:], " - ") {
		return "", "", false
	}
	return format[n+len(" - "):], format[:n], true
}

// isAuthError is whether a client line is the server's report of a
// refused connection.
func isAuthError(kind string, v []any) bool {
	if kind == server.ErrAuthentication.Error() {
		return true
	}
	if len(v) > 0 {
		if err, ok := v[0].(error); ok && errors.Is(err, server.ErrAuthentication) {
			return true
		}
	}
	return false
}
