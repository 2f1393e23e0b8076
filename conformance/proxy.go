package conformance

import (
	"io"
	"net"
	"sync"

	"github.com/cockroachdb/errors"
)

// busProxy stands between the container under test and the kit's bus: the
// container is given its address as GASTOWN_NATS_URL, so the kit can take
// the bus away from the container (every connection closed, new ones
// closed as soon as they are made) and give it back, without touching the
// container's token.
type busProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	down     bool
	closed   bool
	wg       sync.WaitGroup
}

// startProxy listens on a free loopback port and forwards every connection
// to upstream (host:port).
func startProxy(upstream string) (*busProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.WithHint(errors.Wrap(err, "listening for the container's bus connections"),
			"the kit needs a free loopback port")
	}
	p := &busProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// url is the address the container connects to.
func (p *busProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *busProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.down || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.wg.Go(func() { p.forward(c) })
		p.mu.Unlock()
	}
}

// forward copies c to a fresh connection to the bus and back until either
// side closes.
func (p *busProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(up, c); _ = up.Close(); _ = c.Close() })
	_, _ = io.Copy(c, up)
	_ = c.Close()
	_ = up.Close()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track records a forwarded pair, or closes it when the bus was taken away
// meanwhile.
func (p *busProxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down || p.closed {
		_ = c.Close()
		_ = up.Close()
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	return true
}

// cut takes the bus away: every connection through the proxy is closed,
// and new ones are closed at once, until restore.
func (p *busProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// restore gives the bus back.
func (p *busProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// Close stops the proxy and every connection through it, and waits for
// them. Safe to call twice.
func (p *busProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}
