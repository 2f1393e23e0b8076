package bus

import (
	"container/list"
	"net"
	"sync"
	"time"
)

// throttle counts wrong passwords per source address and locks a source
// out once it has sent too many: while locked out, every password
// attempt from it is refused whatever its password, so guessing gains
// nothing. It never waits: a refusal is an answer at once.
//
// Memory is bounded: at most size sources, the one whose last failure is
// oldest forgotten first, and a source is forgotten once it has been
// quiet for max after its last lockout (or last failure) ended.
//
// Token connections are not throttled, by design. A lockout can only save
// work by refusing before the token is verified, and then it refuses valid
// tokens too: every container behind one NAT or on one host shares a
// source address, so one broken or hostile neighbour sending bad tokens
// would shut every town there out. It would buy no safety either: a token
// cannot be guessed (HMAC-SHA256 under a 256-bit secret), unlike a
// password. And a bad token is cheap to refuse: the coordinator's issuer
// refuses one over 8 KiB unread, and a shorter one costs one HMAC, about what the
// server already spent accepting the connection and parsing its CONNECT.
// Bad tokens are counted and their log lines rate-limited like every
// refusal; a source's password lockout never refuses its tokens.
type throttle struct {
	free int           // failures allowed before the first lockout
	base time.Duration // first lockout
	max  time.Duration // longest lockout, and how long a quiet source is remembered
	size int           // most sources remembered

	// report, when set, is told of every failure counted and of every
	// right password that forgot a source's failures, before attempt
	// returns: a cluster's coordinators share their throttles so
	// (throttleshare.go). Set before the throttle is used.
	report func(key string, failed bool)

	mu      sync.Mutex
	sources map[string]*list.Element // of *source
	order   list.List                // least recently failed first
}

// source is what the throttle remembers of one source address.
type source struct {
	key      string
	failures int
	last     time.Time // last failure
	until    time.Time // locked out until (zero: never locked out)
}

// verdict is the throttle's answer to one password attempt.
type verdict int

const (
	admitted  verdict = iota // the password was right and the source is not locked out
	wrong                    // the password was wrong; counted
	lockedOut                // the source is locked out; the password does not matter
)

func newThrottle(l Limits) *throttle {
	return &throttle{free: l.PasswordFailures, base: l.LockoutBase, max: l.LockoutMax, size: l.ThrottleSources,
		sources: map[string]*list.Element{}}
}

// attempt records a password attempt from key at now, right saying
// whether its password was right, and returns the verdict. Checking the
// lockout and recording the failure happen at once, so attempts sent in
// parallel get no more guesses than attempts sent one by one.
func (t *throttle) attempt(key string, now time.Time, right bool) verdict {
	v, forgot := t.record(key, now, right)
	if t.report != nil && (v == wrong || forgot) {
		t.report(key, v == wrong)
	}
	return v
}

// record is attempt without the report; forgot says a right password
// forgot the source's failures.
func (t *throttle) record(key string, now time.Time, right bool) (v verdict, forgot bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
	e := t.sources[key]
	if e != nil && t.quiet(e.Value.(*source), now) {
		t.removeLocked(e) // behind a source that is not yet forgotten
		e = nil
	}
	if e != nil && now.Before(e.Value.(*source).until) {
		return lockedOut, false
	}
	if right {
		if e != nil {
			t.removeLocked(e)
		}
		return admitted, e != nil
	}
	if e == nil {
		for len(t.sources) >= t.size {
			t.removeLocked(t.order.Front())
		}
		e = t.order.PushBack(&source{key: key})
		t.sources[key] = e
	} else {
		t.order.MoveToBack(e)
	}
	s := e.Value.(*source)
	s.failures++
	s.last = now
	if over := s.failures - t.free; over >= 0 {
		s.until = now.Add(t.lockout(over))
	}
	return wrong, false
}

// lockout is the lockout after the free failures and over more.
func (t *throttle) lockout(over int) time.Duration {
	d := t.base
	for ; over > 0 && d < t.max; over-- {
		d *= 2
	}
	return min(d, t.max)
}

// expireLocked forgets the least recently failed sources that have been
// quiet long enough. t.mu must be held.
func (t *throttle) expireLocked(now time.Time) {
	for e := t.order.Front(); e != nil && t.quiet(e.Value.(*source), now); e = t.order.Front() {
		t.removeLocked(e)
	}
}

// quiet is whether s has been quiet long enough to be forgotten: max
// since its last failure and since its lockout ended.
func (t *throttle) quiet(s *source, now time.Time) bool {
	return !now.Before(s.last.Add(t.max)) && !now.Before(s.until.Add(t.max))
}

func (t *throttle) removeLocked(e *list.Element) {
	delete(t.sources, e.Value.(*source).key)
	t.order.Remove(e)
}

// len is how many sources are remembered.
func (t *throttle) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sources)
}

// sourceKey is the source a connection is throttled by: its IP address
// without the port, or for IPv6 its /64 network (one host commonly holds
// a whole /64, and could otherwise change address at each guess).
// throttled is false for the in-process connection (network "pipe").
func sourceKey(addr net.Addr) (key string, throttled bool) {
	if addr == nil {
		return "", true // the connection is already gone
	}
	if addr.Network() == "pipe" {
		return "", false
	}
	var ip net.IP
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ip = tcp.IP
	} else if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		ip = net.ParseIP(host)
	}
	switch {
	case ip == nil:
		return addr.String(), true
	case ip.To4() != nil:
		return ip.To4().String(), true
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64", true
}
