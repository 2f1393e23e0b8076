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
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: bus.PlainErrors}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, errors.Mark(errors.Newf("--log-format %q is not text or json", format), ErrUsage)
}
