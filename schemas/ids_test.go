package schemas_test

import (
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

func TestValidateID(t *testing.T) {
	good := []string{
		"A", "z", "0", "_", "-", "town-1", "Rig_2", "abc-DEF_123",
		strings.Repeat("a", schemas.MaxIDLen),
	}
	for _, id := range good {
		t.Run("good/"+id, func(t *testing.T) {
			require.NoError(t, schemas.ValidateID("townId", id))
		})
	}

	bad := []struct{ name, id string }{
		{"empty", ""},
		{"65 chars", strings.Repeat("a", schemas.MaxIDLen+1)},
		{"very long", strings.Repeat("a", 10_000)},
		{"dot", "a.b"},
		{"star", "*"},
		{"star inside", "a*"},
		{"greater than", ">"},
		{"space", "a b"},
		{"leading space", " a"},
		{"tab", "a\tb"},
		{"newline", "a\nb"},
		{"trailing newline", "a\n"},
		{"NUL", "a\x00"},
		{"unicode letter", "café"},
		{"unicode digit", "١٢٣"},
		{"emoji", "🚀"},
		{"invalid utf-8", "a\xff"},
		{"slash", "a/b"},
		{"dollar", "$SYS"},
		{"colon", "a:b"},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			err := schemas.ValidateID("townId", tc.id)
			require.Error(t, err)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Equal(t, schemas.CodeInvalidArgument, schemas.CodeOf(err))
			require.Contains(t, err.Error(), "townId", "the error names the field")
		})
	}
}

func TestValidateMethod(t *testing.T) {
	good := []string{"bead", "bead.get", "token.mint", "a.b.c.d", "mail_send", "x-1.y_2"}
	for _, m := range good {
		t.Run("good/"+m, func(t *testing.T) {
			require.NoError(t, schemas.ValidateMethod(m))
		})
	}
	bad := []struct{ name, method string }{
		{"empty", ""},
		{"only dot", "."},
		{"leading dot", ".bead"},
		{"trailing dot", "bead."},
		{"double dot", "bead..get"},
		{"star", "bead.*"},
		{"full wildcard", ">"},
		{"wildcard part", "bead.>"},
		{"space", "bead get"},
		{"newline", "bead\nget"},
		{"unicode", "bëad"},
		{"part too long", "bead." + strings.Repeat("g", schemas.MaxIDLen+1)},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			err := schemas.ValidateMethod(tc.method)
			require.Error(t, err)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Equal(t, schemas.CodeInvalidArgument, schemas.CodeOf(err))
		})
	}
}
