package coordinator_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// forge builds a JWT by hand: header and claims as given, signed with
// HMAC-SHA256 under key (or with the signature given).
func forge(header, claims map[string]any, key []byte) string {
	signing := b64(header) + "." + b64(claims)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// TestAttackMalformedTokens: every malformed token shape gets
// unauthenticated on a request and is refused at connect; the coordinator
// keeps serving the honest container.
func TestAttackMalformedTokens(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	townFixture(t, h)
	good := h.ContainerToken("T")
	parts := strings.Split(good, ".")
	now := time.Now().Unix()
	claims := map[string]any{"townId": "T", "userId": "T", "scope": "container", "iat": now, "exp": now + 3600}
	secretGuess := []byte("guessed-secret-guessed-secret-guessed-secret")
	cases := []struct{ name, token string }{
		{"truncated", good[:len(good)/2]},
		{"two segments", parts[0] + "." + parts[1]},
		{"four segments", good + ".x"},
		{"empty signature", parts[0] + "." + parts[1] + "."},
		{"huge", parts[0] + "." + strings.Repeat("A", 200_000) + "." + parts[2]},
		{"non-JSON claims", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("not json")) + "." + parts[2]},
		{"claims swapped under a good signature", parts[0] + "." + b64(map[string]any{"townId": "U", "userId": "U", "scope": "container", "iat": now, "exp": now + 3600}) + "." + parts[2]},
		{"alg none", b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "."},
		{"RS256 header, HMAC with a guessed key", forge(map[string]any{"alg": "RS256", "typ": "JWT"}, claims, secretGuess)},
		{"HS256 with a guessed key", forge(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "0000000000000000"}, claims, secretGuess)},
		{"unknown kid", forge(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "ffffffffffffffff"}, claims, secretGuess)},
		{"garbage", "!!!***>>>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rpc(t, h, "T", "ping", tc.token, "", "", nil, nil)
			require.ErrorIs(t, err, schemas.ErrUnauthenticated)
			if len(tc.token) < 8192 {
				_, cerr := nats.Connect(h.URL(), nats.Token(tc.token), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
				require.ErrorIs(t, cerr, nats.ErrAuthorization)
			}
			// The honest container is still served.
			_, err = rpc(t, h, "T", "ping", good, "", "", nil, nil)
			require.NoError(t, err)
		})
	}

	// Over and over: every one refused, and memory does not grow.
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	round := func() {
		for _, tc := range cases {
			_, err := rpc(t, h, "T", "ping", tc.token, "", "", nil, nil)
			require.ErrorIs(t, err, schemas.ErrUnauthenticated, tc.name)
		}
	}
	for range 20 {
		round() // warm up
	}
	base := heap()
	for range 200 {
		round()
	}
	grown := int64(heap()) - int64(base)
	t.Logf("%d malformed tokens refused; heap grew by %d bytes", 200*len(cases), grown)
	require.Less(t, grown, int64(8<<20), "memory must not grow with refused tokens")
	_, err := rpc(t, h, "T", "ping", good, "", "", nil, nil)
	require.NoError(t, err)
}

// TestAttackBadIdentifiers: ids with '.', '*', '>', spaces and unicode are
// invalid_argument wherever they are given, and change nothing.
func TestAttackBadIdentifiers(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	townFixture(t, h)
	before := townStatus(t, h)
	tok := h.ContainerToken("T")
	for _, bad := range []string{"a.b", "a*", ">", "a b", "tôwn", "", strings.Repeat("x", 65), "a\nb"} {
		t.Run(bad, func(t *testing.T) {
			err := admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: bad}, nil)
			require.ErrorIs(t, err, schemas.ErrInvalidArgument)
			err = admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: bad, Title: "x"}, nil)
			if bad == "" {
				require.NoError(t, err, "an empty bead id asks for a made-up one")
				return
			}
			require.ErrorIs(t, err, schemas.ErrInvalidArgument)
			_, err = rpc(t, h, "T", "bead.get", tok, "p1", "r1", schemas.BeadRef{BeadID: bad}, nil)
			require.ErrorIs(t, err, schemas.ErrInvalidArgument)
			if !strings.ContainsAny(bad, "\n") {
				_, err = rpc(t, h, "T", "prime", tok, bad, "r1", nil, nil)
				require.ErrorIs(t, err, schemas.ErrInvalidArgument)
			}
		})
	}
	after := townStatus(t, h)
	var b, a coordinator.TownStatus
	require.NoError(t, json.Unmarshal(before, &b))
	require.NoError(t, json.Unmarshal(after, &a))
	require.Equal(t, b.Agents, a.Agents)
	require.Equal(t, len(b.Beads)+1, len(a.Beads), "only the one bead with a made-up id was created")
}

// TestAttackOversizedBody: a body over 1 MiB is invalid_argument and
// changes nothing.
func TestAttackOversizedBody(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	townFixture(t, h)
	tok := h.ContainerToken("T")
	huge := schemas.Checkpoint{Note: strings.Repeat("x", schemas.MaxBodySize)}
	_, err := rpc(t, h, "T", "checkpoint", tok, "p1", "r1", huge, nil)
	require.ErrorIs(t, err, schemas.ErrInvalidArgument)
	a := agentState(t, h, "T", "p1")
	require.Empty(t, a.Checkpoint)
}

// TestAttackRevokedFlood: 10,000 requests with a revoked token each get
// unauthenticated, others are served meanwhile, and memory does not grow.
func TestAttackRevokedFlood(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	// The honest town calls as fast as it can: what is measured is that
	// the flood does not starve it, not its own rate (without -race it
	// goes over the default rate and is refused, resource_exhausted).
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{RPCRate: 1e9}})
	townFixture(t, h)
	revoked := h.ContainerToken("T")
	require.NoError(t, admin(t, h, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "T"}, nil))
	honest := h.ContainerToken("U")

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	flood := func(count int) {
		var wg sync.WaitGroup
		work := make(chan int)
		for range 32 {
			wg.Go(func() {
				for range work {
					m := nats.NewMsg("gastown.town.T.rpc.ping")
					m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+revoked)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					resp, err := h.TownConn("T").RequestMsgWithContext(ctx, m)
					cancel()
					if err != nil {
						t.Errorf("request: %v", err)
						continue
					}
					if resp.Header.Get(schemas.ErrorHeader) != string(schemas.CodeUnauthenticated) {
						t.Errorf("revoked token answered %q", resp.Data)
					}
				}
			})
		}
		for i := range count {
			work <- i
		}
		close(work)
		wg.Wait()
	}
	flood(n / 10) // warm up caches and pools
	base := heap()
	// Another town calls all the while: it is served throughout.
	stop := make(chan struct{})
	var served, failed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Not rpc: require must not stop the test from this goroutine.
			m := nats.NewMsg("gastown.town.U.rpc.ping")
			m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+honest)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := bus.Call(ctx, h.TownConn("U"), m, nil)
			cancel()
			if err != nil {
				failed.Add(1)
			} else {
				served.Add(1)
			}
		}
	})
	flood(n)
	close(stop)
	wg.Wait()
	grown := int64(heap()) - int64(base)
	t.Logf("%d revoked requests refused; heap grew by %d bytes; the other town was served %d times meanwhile", n, grown, served.Load())
	require.Less(t, grown, int64(8<<20), "memory must not grow with refused requests")
	require.Zero(t, failed.Load(), "the other town's calls failed during the flood")
	require.Positive(t, served.Load(), "the other town is served during the flood")
}
