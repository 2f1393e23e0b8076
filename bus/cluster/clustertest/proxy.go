package clustertest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/gastown/gastown/bus/cluster"
	"github.com/stretchr/testify/require"
)

// proxies carry every route link: node i dials node j through the proxy
// of the pair (i, j), so cutting node i closes the proxies of its pairs
// and leaves the others' links alone. Each node advertises a black hole
// for routes, so that no node learns another's real route port through
// gossip and opens a link around the proxies: the routes are a full mesh
// of explicit ones.
type proxies struct {
	routeURLs [][]string
	advertise []string
	links     []*link
	holes     []net.Listener
	wg        sync.WaitGroup

	mu  sync.Mutex
	cut map[int]bool // the nodes cut off
}

// link is the proxy of one ordered pair of nodes.
type link struct {
	from, to int
	target   string
	l        net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newProxies(t testing.TB, plan cluster.Plan, base int) *proxies {
	t.Helper()
	p := &proxies{routeURLs: make([][]string, plan.Nodes)}
	port := base
	for i := range plan.Nodes {
		hole, err := net.Listen("tcp", addr(port))
		require.NoError(t, err)
		port++
		p.holes = append(p.holes, hole)
		p.advertise = append(p.advertise, hole.Addr().String())
		p.wg.Go(func() {
			for {
				c, err := hole.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		})
		for j := range plan.Nodes {
			if i == j {
				continue
			}
			l, err := net.Listen("tcp", addr(port))
			require.NoError(t, err)
			port++
			lk := &link{from: i, to: j, target: plan.ClusterAddr(j), l: l, conns: map[net.Conn]struct{}{}}
			p.links = append(p.links, lk)
			p.routeURLs[i] = append(p.routeURLs[i], l.Addr().String())
			p.wg.Go(func() { lk.serve(&p.wg) })
		}
	}
	return p
}

func (lk *link) serve(wg *sync.WaitGroup) {
	for {
		c, err := lk.l.Accept()
		if err != nil {
			return
		}
		lk.mu.Lock()
		if lk.cut {
			lk.mu.Unlock()
			_ = c.Close()
			continue
		}
		lk.conns[c] = struct{}{}
		lk.mu.Unlock()
		wg.Go(func() { lk.pipe(c) })
	}
}

// pipe copies between c and a new connection to the target until either
// end closes or the link is cut.
func (lk *link) pipe(c net.Conn) {
	defer lk.drop(c)
	up, err := net.Dial("tcp", lk.target)
	if err != nil {
		return
	}
	lk.mu.Lock()
	if lk.cut {
		lk.mu.Unlock()
		_ = up.Close()
		return
	}
	lk.conns[up] = struct{}{}
	lk.mu.Unlock()
	defer lk.drop(up)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			_ = err // a reset link: both ends are closed below
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
}

func (lk *link) drop(c net.Conn) {
	_ = c.Close()
	lk.mu.Lock()
	delete(lk.conns, c)
	lk.mu.Unlock()
}

// setCut cuts (closing every connection through it) or heals the link.
func (lk *link) setCut(cut bool) {
	lk.mu.Lock()
	lk.cut = cut
	var open []net.Conn
	if cut {
		for c := range lk.conns {
			open = append(open, c)
		}
	}
	lk.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

func (p *proxies) close() {
	for _, h := range p.holes {
		_ = h.Close()
	}
	for _, lk := range p.links {
		_ = lk.l.Close()
		lk.setCut(true)
	}
	p.wg.Wait()
}

// Cut partitions node i from the others: every route link to or from it
// is closed, and refused until Heal. The other nodes stay linked.
func (c *Cluster) Cut(i int) { c.setCut(i, true) }

// Heal lets node i's route links through again (but those to a node still
// cut); the nodes redial them by themselves.
func (c *Cluster) Heal(i int) { c.setCut(i, false) }

func (c *Cluster) setCut(i int, cut bool) {
	c.t.Helper()
	require.NotNil(c.t, c.proxies, "Cut and Heal need Options.Partitionable")
	p := c.proxies
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut == nil {
		p.cut = map[int]bool{}
	}
	p.cut[i] = cut
	for _, lk := range p.links {
		lk.setCut(p.cut[lk.from] || p.cut[lk.to])
	}
}
