package token

import (
	"go/build"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImportsStayFew holds the package to its rule (doc.go): it imports
// schemas, bus, jwt, cockroachdb/errors and the standard library, and so
// never the coordinator.
func TestImportsStayFew(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	allowed := map[string]bool{
		"github.com/gastown/gastown/schemas": true,
		"github.com/gastown/gastown/bus":     true,
		"github.com/golang-jwt/jwt/v5":       true,
		"github.com/cockroachdb/errors":      true,
	}
	for _, imp := range pkg.Imports {
		std := !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".")
		require.True(t, std || allowed[imp], "coordinator/token imports %s; it may import only schemas, bus, jwt, cockroachdb/errors and the standard library", imp)
	}
}
