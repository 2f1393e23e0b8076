package bustest

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// Record is one line a Records handler kept: its level, message and
// attributes (the logger's own and the line's, by key).
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]any
}

// Records is a slog handler that keeps every line at its level or above,
// for tests that count or read log lines. It is safe for concurrent use.
type Records struct {
	level slog.Level
	mu    sync.Mutex
	recs  []Record
}

// NewRecords keeps the lines at level and above.
func NewRecords(level slog.Level) *Records { return &Records{level: level} }

// Logger logs to r.
func (r *Records) Logger() *slog.Logger { return slog.New(recordsHandler{r: r}) }

// Lines is every line kept so far that match accepts (all when nil).
func (r *Records) Lines(match func(Record) bool) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	if match == nil {
		return slices.Clone(r.recs)
	}
	var out []Record
	for _, rec := range r.recs {
		if match(rec) {
			out = append(out, rec)
		}
	}
	return out
}

// Reset forgets the lines kept so far.
func (r *Records) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = nil
}

type recordsHandler struct {
	r     *Records
	attrs []slog.Attr
}

func (h recordsHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.r.level }

func (h recordsHandler) Handle(_ context.Context, rec slog.Record) error {
	out := Record{Level: rec.Level, Message: rec.Message, Attrs: make(map[string]any, len(h.attrs)+rec.NumAttrs())}
	for _, a := range h.attrs {
		out.Attrs[a.Key] = a.Value.Resolve().Any()
	}
	rec.Attrs(func(a slog.Attr) bool {
		out.Attrs[a.Key] = a.Value.Resolve().Any()
		return true
	})
	h.r.mu.Lock()
	h.r.recs = append(h.r.recs, out)
	h.r.mu.Unlock()
	return nil
}

func (h recordsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordsHandler{r: h.r, attrs: append(slices.Clip(h.attrs), as...)}
}

// WithGroup is not used by Gastown's logs; attributes keep their own keys.
func (h recordsHandler) WithGroup(string) slog.Handler { return h }
