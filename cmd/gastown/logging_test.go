package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

// Durations are written as Go writes them, in JSON too; errors as one
// line.
func TestLogFormats(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			log, err := newLogger(&b, "info", format)
			require.NoError(t, err)
			log.Info("starting", "tokenTTL", 8*time.Hour, "wait", 5*time.Second, "err", errors.Wrap(errors.New("inner"), "outer"))
			line := b.String()
			require.Equal(t, 1, strings.Count(line, "\n"), line)
			if format == "json" {
				var m map[string]any
				require.NoError(t, json.Unmarshal([]byte(line), &m))
				require.Equal(t, "8h0m0s", m["tokenTTL"])
				require.Equal(t, "5s", m["wait"])
				require.Equal(t, "outer: inner", m["err"])
				return
			}
			require.Contains(t, line, "tokenTTL=8h0m0s")
			require.Contains(t, line, "wait=5s")
			require.Contains(t, line, `err="outer: inner"`)
		})
	}
}
