package login

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
)

var errDisabled = errors.New("disabled")

type fakeDir struct {
	logins  []string
	longest int // longest username Authenticate was given
}

func (d *fakeDir) Authenticate(user, pw string) error {
	d.longest = max(d.longest, len(user))
	switch {
	case strings.EqualFold(user, "alice@example.test") && pw == "right":
		return nil
	case user == "dave@example.test" && pw == "right":
		return errDisabled
	}
	return errors.New("auth failed")
}
func (d *fakeDir) RecordLogin(addr string, _ time.Time) { d.logins = append(d.logins, addr) }

// fakeGuard refuses by the login name it is given.
type fakeGuard struct{}

func (fakeGuard) AuthCheck(ip netip.Addr, user string) guard.Decision {
	if user == "banned@example.test" {
		return guard.Decision{Verdict: guard.Drop, Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "banned", Rule: "auth.banned"}
	}
	return guard.Decision{}
}
func (fakeGuard) AuthResult(ip netip.Addr, user string, ok bool) guard.Decision {
	if user == "throttled@example.test" {
		return guard.Decision{Verdict: guard.Defer, Code: 454, Enhanced: [3]int{4, 7, 0}, Text: "try later", Rule: "auth.throttled"}
	}
	return guard.Decision{}
}

func TestCheck(t *testing.T) {
	var logBuf bytes.Buffer
	dir := &fakeDir{}
	c := &Checker{Dir: dir, Guard: fakeGuard{}, Log: slog.New(slog.NewTextHandler(&logBuf, nil)),
		Disabled: func(err error) bool { return errors.Is(err, errDisabled) }}
	ip := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		name, user, pw string
		wantUser       string
		wantText       string
		temporary      bool
		drop           bool
	}{
		{"right password", " Alice@Example.TEST ", "right", "alice@example.test", "", false, false},
		{"wrong password", "alice@example.test", "wrong", "", guard.InvalidCredentials.Text, false, false},
		{"unknown user answers like a wrong password", "nobody@example.test", "right", "", guard.InvalidCredentials.Text, false, false},
		{"disabled, right password: told plainly", "dave@example.test", "right", "", AccountDisabled.Text, false, false},
		{"disabled, wrong password: nothing told", "dave@example.test", "wrong", "", guard.InvalidCredentials.Text, false, false},
		{"guard throttle is temporary", "throttled@example.test", "x", "", "try later", true, false},
		{"guard ban drops", "banned@example.test", "x", "", "banned", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := c.Check(ip, "imap", tt.user, tt.pw)
			if tt.wantUser != "" {
				if err != nil || user != tt.wantUser {
					t.Fatalf("Check = %q, %v; want %q", user, err, tt.wantUser)
				}
				return
			}
			le, ok := AsError(err)
			if !ok {
				t.Fatalf("err %v is not a *login.Error", err)
			}
			if le.Text != tt.wantText || le.Temporary != tt.temporary || le.Drop != tt.drop {
				t.Errorf("refusal %+v, want text %q temporary %v drop %v", le, tt.wantText, tt.temporary, tt.drop)
			}
		})
	}
	if len(dir.logins) != 1 || dir.logins[0] != "alice@example.test" {
		t.Errorf("recorded logins %v, want only alice's", dir.logins)
	}
	for _, pw := range []string{"=right", "=wrong", `"right"`, `"wrong"`} {
		if strings.Contains(logBuf.String(), pw) {
			t.Errorf("a password reached the log (%s):\n%s", pw, logBuf.String())
		}
	}
}

func TestUsernameBounded(t *testing.T) {
	dir := &fakeDir{}
	c := &Checker{Dir: dir}
	_, err := c.Check(netip.MustParseAddr("192.0.2.1"), "pop3", strings.Repeat("a", 10000)+"@example.test", "x")
	if _, ok := AsError(err); !ok {
		t.Fatalf("long username: %v", err)
	}
	if dir.longest > MaxUsername {
		t.Errorf("the directory was given a %d-byte username, want at most %d", dir.longest, MaxUsername)
	}
}
