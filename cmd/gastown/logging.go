package main

import (
	"io"
	"log/slog"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
)

// newLogger makes the structured logger of a daemon.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, errors.Mark(errors.Newf("--log-level %q is not debug, info, warn or error", level), ErrUsage)
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: replaceAttr}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, errors.Mark(errors.Newf("--log-format %q is not text or json", format), ErrUsage)
}

// replaceAttr logs errors as their message on one line (bus.PlainErrors)
// and durations as Go writes them ("5s", "1h0m0s"), in both formats: the
// JSON handler would write integer nanoseconds.
func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return bus.PlainErrors(groups, a)
}
