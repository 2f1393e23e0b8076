package clustertest

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// portSpan is how many ports a cluster's block holds: clients at base,
// routes at base+16, monitoring at base+32, proxies from base+48.
const portSpan = 256

// FreePortBlock returns base, where base..base+255 were all free on
// 127.0.0.1 a moment ago: a block below the ephemeral range (32768–60999)
// that listen-0 and outgoing connections draw from, so that another socket
// is unlikely to take one meanwhile. Start and StartInProcess lay their
// nodes out in one; a test that runs 'gastown cluster init' itself takes
// one for its ports.
func FreePortBlock(t testing.TB) int {
	t.Helper()
	for range 200 {
		base := 10000 + rand.IntN((32000-10000)/portSpan)*portSpan
		if blockFree(base) {
			return base
		}
	}
	t.Fatal("clustertest: found no block of free loopback ports in 10000–32000")
	return 0
}

func blockFree(base int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for p := base; p < base+portSpan; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	return true
}
