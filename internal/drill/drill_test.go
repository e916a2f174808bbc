package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

const (
	testUser = "drill@ours.test"
	testPass = "correct horse"
)

// fake is a toy mail server with a toy guard and a toy admin API: just
// enough behaviour for each drill step to fire, or not, on demand.
type fake struct {
	fakeCfg

	addr string
	mu   sync.Mutex
	// seen by the server
	ips       map[string]map[netip.Addr]int // "relay", "login" → source → count
	authFails map[netip.Addr]int
	banned    map[netip.Addr]bool
	msgs      int
	held      int
	isolated  bool
	// admin calls
	calls []string
}

type fakeCfg struct {
	openRelay  bool // accept foreign RCPT from anyone
	authLimit  int  // wrong passwords per IP before AUTH answers 454 (0: never)
	banAtLimit bool // and ban the IP: refused at connect from then on
	isolateAt  int  // messages of the test user before it is isolated (0: never)
	deferAt    int  // messages before 451 (0: never)
}

func (f *fake) note(kind string, ip netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ips[kind] == nil {
		f.ips[kind] = map[netip.Addr]int{}
	}
	f.ips[kind][ip]++
}

func (f *fake) sources(kind string) []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for a := range f.ips[kind] {
		out = append(out, a)
	}
	return out
}

// banListener refuses banned clients at connect, as mamori does.
type banListener struct {
	net.Listener
	f *fake
}

func (l banListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(c.RemoteAddr())
		l.f.mu.Lock()
		banned := l.f.banned[ip]
		l.f.mu.Unlock()
		if !banned {
			return c, nil
		}
		fmt.Fprint(c, "554 5.7.1 banned\r\n")
		c.Close()
	}
}

func addrOf(a net.Addr) netip.Addr {
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}

func startFake(t *testing.T, cfg fakeCfg) *fake {
	t.Helper()
	f := &fake{fakeCfg: cfg}
	f.ips, f.authFails, f.banned = map[string]map[netip.Addr]int{}, map[netip.Addr]int{}, map[netip.Addr]bool{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &fakeSession{f: f, ip: addrOf(c.Conn().RemoteAddr())}, nil
	}))
	srv.Domain = "mx.ours.test"
	srv.TLSConfig = testutil.NewCert(t, "mx.ours.test").Server
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	go srv.Serve(banListener{l, f})
	t.Cleanup(func() { srv.Close() })
	return f
}

type fakeSession struct {
	f    *fake
	ip   netip.Addr
	user string
	rcpt string
}

func (s *fakeSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *fakeSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		f := s.f
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.authLimit > 0 && f.authFails[s.ip] >= f.authLimit {
			return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many failures, try later"}
		}
		if user != testUser || pass != testPass {
			f.authFails[s.ip]++
			if f.banAtLimit && f.authFails[s.ip] >= f.authLimit {
				f.banned[s.ip] = true
			}
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.user = user
		return nil
	}), nil
}
func (s *fakeSession) Reset()        { s.rcpt = "" }
func (s *fakeSession) Logout() error { return nil }
func (s *fakeSession) Mail(string, *smtp.MailOptions) error {
	if s.user != "" {
		s.f.note("login", s.ip)
	} else {
		s.f.note("relay", s.ip)
	}
	return nil
}
func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	local := strings.EqualFold(to, testUser) || strings.EqualFold(to, "postmaster@ours.test")
	if s.user == "" && !s.f.openRelay && !local {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	}
	s.rcpt = to
	return nil
}
func (s *fakeSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.user == "" {
		return nil
	}
	if !bytes.Contains(b, []byte("Subject: mamori drill ")) || !strings.HasSuffix(s.rcpt, "@drill.invalid") {
		return errors.New("not a drill message")
	}
	if f.deferAt > 0 && f.msgs >= f.deferAt {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "sender isolated, try later"}
	}
	f.msgs++
	if f.isolateAt > 0 && f.msgs > f.isolateAt {
		f.isolated = true
		f.held++
	}
	return nil
}

// The fake's admin API.
func (f *fake) call(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}
func (f *fake) GuardSnapshot() (guard.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s guard.Snapshot
	if f.isolated {
		s.Isolated = append(s.Isolated, guard.Isolation{User: testUser, Rule: "rate.msgs_per_minute",
			Counts: map[string]int{"msgs_per_minute": f.isolateAt + 1}, Since: time.Now(), Held: f.held})
	}
	for ip := range f.banned {
		s.Bans = append(s.Bans, guard.Ban{CIDR: ip.String() + "/32", Rule: "auth.bruteforce", Expires: time.Now().Add(time.Hour)})
	}
	// An administrator's own ban, which the drill must leave alone.
	s.Bans = append(s.Bans, guard.Ban{CIDR: "127.0.0.0/8", Rule: "admin", Expires: time.Now().Add(time.Hour)})
	return s, nil
}
func (f *fake) QueueCount(q queue.Filter) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q.User != testUser || q.To != "@drill.invalid" {
		return 0, fmt.Errorf("unexpected filter %+v", q)
	}
	switch q.State {
	case queue.StateHeld:
		return f.held, nil
	case queue.StateActive:
		return f.msgs - f.held, nil
	}
	return 0, nil
}
func (f *fake) QueueOp(op string, q queue.Filter, _ string) (int, error) {
	f.call(fmt.Sprintf("%s user=%s to=%s state=%s", op, q.User, q.To, q.State))
	return f.msgs, nil
}
func (f *fake) GuardRelease(target string, _ bool) (int, error) {
	f.call("release " + target)
	return 0, nil
}
func (f *fake) GuardUnban(cidr string) error {
	f.call("unban " + cidr)
	return nil
}

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		fake       fakeCfg
		noConfig   bool
		trusted    []netip.Prefix
		wantLines  []string // substrings of the steps' lines, in order
		wantPassed bool
		wantCalls  []string // substrings expected among the admin calls
		wantTodo   []string
		wantStop   string // the reply that ended the password guessing
		burst      int
		wantNote   string // a note of the burst step
	}{
		{
			name: "every defence fires", fake: fakeCfg{authLimit: 5, isolateAt: 30},
			trusted:    pfx("127.0.0.0/24"),
			wantLines:  []string{"relay: closed (0 of ", "auth brute force: FIRED after 5 failures (try 6: 454 4.7.0 too many failures", "burst: FIRED — user isolated after 30 messages (rule rate.msgs_per_minute), 10 held"},
			wantPassed: true,
			wantCalls:  []string{"delete user=drill@ours.test to=@drill.invalid state=", "release drill@ours.test"},
		},
		{
			name: "ban at connect", fake: fakeCfg{authLimit: 4, banAtLimit: true, isolateAt: 30},
			wantLines:  []string{"relay: closed", "auth brute force: FIRED after 4 failures (rule auth.bruteforce, 127.", "burst: FIRED"},
			wantPassed: true,
			wantCalls:  []string{"unban 127."},
			wantStop:   "554 5.7.1 banned",
		},
		{
			name: "open relay, no brute-force limit, no isolation", fake: fakeCfg{openRelay: true},
			wantLines:  []string{"relay: NOT FIRED — OPEN RELAY", "auth brute force: NOT FIRED — 12 wrong passwords, every one answered 535", "burst: NOT FIRED — 40 of 40 messages accepted, user not isolated (0 held, 40 queued)"},
			wantPassed: false,
			wantCalls:  []string{"delete user=drill@ours.test"},
		},
		{
			name: "451 without isolation", fake: fakeCfg{authLimit: 5, deferAt: 30},
			wantLines:  []string{"relay: closed", "auth brute force: FIRED", "burst: FIRED — 451 after 30 accepted messages (451 4.7.1 sender isolated, try later), but the user is not isolated"},
			wantPassed: true,
		},
		{
			name: "burst below the limit", fake: fakeCfg{authLimit: 5, isolateAt: 30}, burst: 7,
			wantLines:  []string{"relay: closed", "auth brute force: FIRED", "burst: NOT FIRED — 7 of 7 messages accepted, user not isolated"},
			wantPassed: false,
			wantNote:   "a burst of 7 is not above the account's limit of 30 messages per minute",
		},
		{
			name: "all loopback trusted", fake: fakeCfg{authLimit: 5, isolateAt: 30}, trusted: pfx("127.0.0.0/8"),
			wantLines:  []string{"relay: skipped: every loopback address is trusted", "auth brute force: FIRED", "burst: FIRED"},
			wantPassed: true,
		},
		{
			name: "no config: nothing verified, commands printed", fake: fakeCfg{authLimit: 5, isolateAt: 30}, noConfig: true,
			wantLines:  []string{"relay: closed", "auth brute force: FIRED after 5 failures", "burst: NOT VERIFIED — 40 of 40 messages accepted"},
			wantPassed: false,
			wantTodo:   []string{"mamori queue delete --user drill@ours.test --to @drill.invalid --config FILE", "mamori guard release drill@ours.test --config FILE", "mamori guard unban 127."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, tt.fake)
			opt := Options{Target: f.addr, Submission: f.addr, User: testUser, Password: testPass,
				Timeout: 5 * time.Second, Rand: mrand.New(mrand.NewPCG(5, 6)), Burst: tt.burst}
			if !tt.noConfig {
				opt.Server = &Server{ConfigPath: "/etc/mamori.toml", Trusted: tt.trusted, Admin: f}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := Run(ctx, opt)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(rep.Steps) != 3 {
				t.Fatalf("%d steps", len(rep.Steps))
			}
			for i, want := range tt.wantLines {
				if !strings.Contains(rep.Steps[i].Line, want) {
					t.Errorf("step %d line %q, want it to contain %q", i, rep.Steps[i].Line, want)
				}
			}
			if tt.wantStop != "" && rep.Steps[1].Auth.StopReply != tt.wantStop {
				t.Errorf("password guessing ended with %q, want %q", rep.Steps[1].Auth.StopReply, tt.wantStop)
			}
			if tt.wantNote != "" && !strings.Contains(strings.Join(rep.Steps[2].Notes, "\n"), tt.wantNote) {
				t.Errorf("burst notes %q lack %q", rep.Steps[2].Notes, tt.wantNote)
			}
			if rep.Passed != tt.wantPassed {
				t.Errorf("Passed = %v, want %v", rep.Passed, tt.wantPassed)
			}

			// Where each step came from.
			if rep.Steps[0].Result != Skipped {
				relaySrc := f.sources("relay")
				if len(relaySrc) != 1 || relaySrc[0].String() != rep.Steps[0].Source {
					t.Errorf("relay probes came from %v, report says %s", relaySrc, rep.Steps[0].Source)
				}
				for _, p := range tt.trusted {
					if p.Contains(relaySrc[0]) {
						t.Errorf("relay probes came from trusted %v", relaySrc[0])
					}
				}
			}
			f.mu.Lock()
			var authSrc []netip.Addr
			for ip := range f.authFails {
				authSrc = append(authSrc, ip)
			}
			f.mu.Unlock()
			if len(authSrc) != 1 || !authSources.Contains(authSrc[0]) || authSrc[0].String() != rep.Steps[1].Source {
				t.Errorf("wrong passwords came from %v (report: %s), want one address in %v", authSrc, rep.Steps[1].Source, authSources)
			}
			if login := f.sources("login"); len(login) != 1 || login[0] != burstSource {
				t.Errorf("burst came from %v, want %v", login, burstSource)
			}

			calls := strings.Join(f.calls, "\n")
			for _, want := range tt.wantCalls {
				if !strings.Contains(calls, want) {
					t.Errorf("admin calls lack %q:\n%s", want, calls)
				}
			}
			if strings.Contains(calls, "unban 127.0.0.0/8") {
				t.Errorf("the drill lifted the administrator's network ban:\n%s", calls)
			}
			if tt.noConfig && len(f.calls) != 0 {
				t.Errorf("admin calls without a config: %v", f.calls)
			}
			todo := strings.Join(rep.Todo, "\n")
			for _, want := range tt.wantTodo {
				if !strings.Contains(todo, want) {
					t.Errorf("todo lacks %q:\n%s", want, todo)
				}
			}

			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			verdict := "drill passed"
			if !tt.wantPassed {
				verdict = "drill FAILED"
			}
			if !strings.Contains(text.String(), verdict) || !strings.Contains(text.String(), rep.Steps[2].Line) {
				t.Errorf("text report:\n%s", text.String())
			}
			b, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(b, &back); err != nil || len(back.Steps) != 3 || back.Passed != rep.Passed || back.Steps[2].Burst == nil {
				t.Errorf("JSON round trip: %v\n%s", err, b)
			}
		})
	}
}

// TestRunServerGone: a target that does not answer gives NOT FIRED
// lines, not an error or a hang.
func TestRunServerGone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rep, err := Run(context.Background(), Options{Target: addr, Submission: addr, User: testUser, Password: testPass, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed {
		t.Error("passed against a closed port")
	}
	for _, s := range rep.Steps {
		if s.Result != NotFired {
			t.Errorf("%s: %s (%s)", s.Name, s.Result, s.Line)
		}
	}
	if !strings.Contains(rep.Steps[1].Line, "connection refused") {
		t.Errorf("auth line: %s", rep.Steps[1].Line)
	}
}
