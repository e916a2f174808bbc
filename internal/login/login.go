// Package login checks a password login for every protocol — SMTP AUTH,
// IMAP and POP3 — in one place.
//
// It exists so that no protocol becomes the weak door: every login runs
// the guard's login protocol (guard.Login), so brute-force and spraying
// counters, bans, throttles and suspensions are shared across protocols
// (an IP banned for IMAP failures cannot connect to SMTP either), and so
// that the reply never tells a right password from a wrong one once the
// guard refuses, nor whether an account exists or is suspended. Each
// front end only maps the typed result to its own wire reply.
package login

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/policy"
)

// Directory is the part of the user directory a login needs.
type Directory interface {
	// Authenticate checks a password; it must cost the same for unknown
	// users (a dummy hash), so that timing tells nothing.
	Authenticate(username, password string) error
	// RecordLogin notes a successful login (for stale-account reports).
	RecordLogin(addr string, when time.Time)
}

// Error is a refused login. Its Text is safe to send to the client.
type Error struct {
	// Temporary: try again later (a throttle or a blocked pair, SMTP
	// 454 4.7.0); otherwise the credentials are refused (535 5.7.8).
	Temporary bool
	// Drop: the guard banned the address; close the connection.
	Drop bool
	// Code and Enhanced are the SMTP reply of the decision.
	Code     int
	Enhanced [3]int
	Text     string
	// Rule names the guard rule, for logs; "" for a wrong password.
	Rule string
}

func (e *Error) Error() string { return e.Text }

// Authenticator is what a protocol front end (IMAP, POP3) logs in with;
// *Checker implements it, tests may fake it. Errors are *Error values.
type Authenticator interface {
	Check(ip netip.Addr, protocol, username, password string) (user string, err error)
}

// Checker checks logins against a directory through the guard.
type Checker struct {
	Dir   Directory
	Guard guard.Authorizer // nil: no guard (tests)
	Log   *slog.Logger     // nil: no log
	// Disabled reports an Authenticate error that means "right password,
	// account disabled by the administrator": that login is told so
	// plainly (only someone with the password learns it); nil: never.
	Disabled func(error) bool
	// Metrics counts logins by protocol and result; nil: none.
	Metrics *metrics.Metrics
	// Sessions holds the logged-in sessions of every protocol, which end
	// when their credentials are revoked; the front ends register with
	// it after a successful Check. nil: sessions are not tracked.
	Sessions *Sessions
}

// AccountDisabled is the reply to the right password of a disabled
// account.
var AccountDisabled = guard.Decision{Verdict: guard.Reject, Code: 535, Enhanced: [3]int{5, 7, 8},
	Text: "Account disabled, contact your administrator", Rule: "account.disabled"}

// MaxUsername bounds what a client may send as a login name.
const MaxUsername = 320

// Check logs username in from ip with password. It returns the canonical
// login (lower-case address) or an *Error. The password is checked — or,
// for an unknown user, a dummy hash of the same cost computed — for
// every login the guard does not refuse outright by address.
func (c *Checker) Check(ip netip.Addr, protocol, username, password string) (string, error) {
	username = trimUsername(username)
	user := Canonical(username)
	var err error
	verified := false
	verify := func() bool {
		verified = true
		err = c.Dir.Authenticate(username, password)
		return err == nil
	}
	var gd guard.Decision
	if c.Guard != nil {
		gd = guard.Login(c.Guard, ip, user, verify)
	} else {
		verify()
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if gd.Verdict != guard.Accept {
		// Only the log says whether the password was right.
		log.Warn("login refused", "protocol", protocol, "client_ip", ip.String(), "user", user, "rule", gd.Rule,
			"reason", gd.Text, "password_checked", verified, "password_ok", verified && err == nil)
		c.Metrics.AuthResult(protocol, metrics.AuthRefused)
		return "", refusal(gd)
	}
	if err != nil {
		log.Warn("login failed", "protocol", protocol, "client_ip", ip.String(), "user", user, "reason", reason(err))
		if c.Disabled != nil && c.Disabled(err) {
			c.Metrics.AuthResult(protocol, metrics.AuthDisabled)
			return "", refusal(AccountDisabled)
		}
		c.Metrics.AuthResult(protocol, metrics.AuthFailure)
		return "", refusal(guard.InvalidCredentials)
	}
	c.Metrics.AuthResult(protocol, metrics.AuthSuccess)
	c.Dir.RecordLogin(user, time.Now())
	log.Info("login", "protocol", protocol, "client_ip", ip.String(), "user", user)
	return user, nil
}

// trimUsername is the name a client sent as Check reads it.
func trimUsername(username string) string {
	username = strings.TrimSpace(username)
	if len(username) > MaxUsername {
		username = username[:MaxUsername]
	}
	return username
}

// Key is the login Check returns for username when it succeeds (for
// Sessions.Gen before the check).
func Key(username string) string { return Canonical(trimUsername(username)) }

// Canonical is the login name as the guard counts it: the address in
// its canonical form, lower-case.
func Canonical(username string) string {
	if pa, err := policy.ParseAddress(username); err == nil {
		return strings.ToLower(pa.String())
	}
	return strings.ToLower(username)
}

func refusal(d guard.Decision) *Error {
	e := &Error{Code: d.Code, Enhanced: d.Enhanced, Text: d.Text, Rule: d.Rule, Drop: d.Verdict == guard.Drop}
	if e.Code == 0 {
		e.Code, e.Enhanced, e.Text = 454, [3]int{4, 7, 0}, "Temporary authentication failure, try again later"
	}
	e.Temporary = e.Code/100 == 4
	return e
}

// reason gives the log a reason without ever including the password.
func reason(err error) string {
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}

// AsError returns err as an *Error, if it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
