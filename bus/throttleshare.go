package bus

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// On a cluster the servers spread the callouts over every coordinator in
// the queue group, so a throttle kept by each alone would let a source
// guess PasswordFailures times per coordinator. The coordinators share
// it instead: the one that counts a wrong password (or forgets a
// source's failures on a right one) tells the others on ThrottleSubject
// before it answers the callout, and each feeds what it hears into its
// own throttle. Guesses sent one after another are so counted by every
// coordinator: the event travels one route before the answer, while the
// source's next connect needs the answer, a new connection and a callout
// request of its own. (Guesses sent at the same instant to different
// coordinators may each be counted before the others hear of them: at
// most one burst of PasswordFailures per coordinator, after which every
// coordinator has locked the source out.) A coordinator that starts
// late starts from zero: it hears only what is counted after it joined.
//
// Only coordinators can publish there: ThrottleSubject lives in the auth
// callout's account (GASTOWN_AUTH on a generated cluster), whose only
// users are the coordinators' auth keys; no client identity is ever
// placed in it (the callout places containers and admin in the control
// account, ops in the ops account), and the account has no imports or
// exports (`gastown cluster check` verifies both). On the embedded server
// there is one throttle and nothing is shared.

// ThrottleSubject is where a cluster's coordinators share the password
// failures they count, in the auth callout's account.
const ThrottleSubject = "gastown.auth.throttle"

// throttleEvent is one counted attempt, as the coordinators share it: the
// source's throttle key (sourceKey), never the password nor the user.
type throttleEvent struct {
	// From is the sending callout's instance, which ignores its own.
	From string `json:"from"`
	// Source is the throttle key of the source address.
	Source string `json:"source"`
	// Failed is a wrong password counted; false is a right one, which
	// forgets the source's failures where it is not locked out.
	Failed bool `json:"failed"`
}

// maxThrottleEvent bounds an event's size; a longer one is dropped.
const maxThrottleEvent = 256

// throttleShare shares one coordinator's throttle with the others.
type throttleShare struct {
	nc  *nats.Conn
	id  string
	t   *throttle
	now func() time.Time
	log *RateLog
	sub *nats.Subscription
}

// startThrottleShare subscribes nc (the callout's connection) to the
// other coordinators' events and makes t report its own. It must start
// before the callout answers anything.
func startThrottleShare(nc *nats.Conn, t *throttle, now func() time.Time, log *RateLog) (*throttleShare, error) {
	id, err := randomSecret()
	if err != nil {
		return nil, err
	}
	s := &throttleShare{nc: nc, id: id[:16], t: t, now: now, log: log}
	if s.sub, err = nc.Subscribe(ThrottleSubject, s.heard); err != nil {
		return nil, errors.Wrap(err, "subscribing to the coordinators' password failures")
	}
	t.report = s.report
	return s, nil
}

// report tells the other coordinators of an attempt this one counted.
// It is called before the callout's answer is sent on the same
// connection, so the event leaves first.
func (s *throttleShare) report(key string, failed bool) {
	b, err := json.Marshal(throttleEvent{From: s.id, Source: key, Failed: failed})
	if err == nil {
		err = s.nc.Publish(ThrottleSubject, b)
	}
	if err != nil {
		s.log.Log(context.Background(), slog.LevelWarn, "throttle-publish",
			"could not tell the other coordinators of a password failure", KeyErr, err)
	}
}

// heard feeds another coordinator's event into this one's throttle. A
// right password heard of forgets nothing where the source is locked out
// here (throttle.record refuses it first).
func (s *throttleShare) heard(m *nats.Msg) {
	var e throttleEvent
	if len(m.Data) > maxThrottleEvent || json.Unmarshal(m.Data, &e) != nil || !validSourceKey(e.Source) {
		s.log.Log(context.Background(), slog.LevelWarn, "throttle-event",
			"a password failure event could not be read")
		return
	}
	if e.From == s.id {
		return
	}
	s.t.record(e.Source, s.now(), !e.Failed)
}

// close stops hearing the others. Safe to call twice.
func (s *throttleShare) close() {
	if s != nil {
		_ = s.sub.Unsubscribe()
	}
}

// validSourceKey is whether key is one sourceKey makes of a callout's
// client address: an IP address, an IPv6 /64, or "" (address unknown).
func validSourceKey(key string) bool {
	if key == "" {
		return true
	}
	ip, ok := strings.CutSuffix(key, "/64")
	addr := net.ParseIP(ip)
	if addr == nil {
		return false
	}
	return !ok || addr.To4() == nil
}
