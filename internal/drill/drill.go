// Package drill is `mamori drill`: a fire drill against a live mamori
// server that attacks it the way real abusers do — the open-relay battery,
// a password-guessing run, a mass-mailing burst from a real account — and
// reports, defence by defence, whether it fired.
//
// Why it exists: mamori promises to be never an open relay and to isolate a
// compromised sender within seconds. Configuration mistakes (a trusted
// network that is too wide, an override that lifts a limit for everyone)
// silently break such promises; a drill an administrator can run after
// every change proves them on the running server, not on paper.
//
// It is polite by construction: targets must be loopback addresses unless
// the caller allows a remote one; on IPv4 loopback each step comes from its
// own 127.x.y.z source (Linux routes all of 127.0.0.0/8 to the host), so
// the relay battery runs from outside the trusted networks and the password
// guessing from a network the test account never used, and neither touches
// the administrator's own address. Mail goes to drill-N@drill.invalid
// (RFC 2606: cannot exist). With access to the admin API the drill verifies
// what the guard did and cleans up after itself; without, it prints the
// commands that do.
//
// Dependencies: internal/relaytest (the relay battery), go-smtp and
// go-sasl (a complete SMTP client with STARTTLS and AUTH PLAIN, already
// used by the server side), internal/guard and internal/queue only for the
// types of the admin API's answers.
package drill

import (
	"context"
	"errors"
	"fmt"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/relaytest"
)

// Defaults.
const (
	DefaultBurst     = 40
	DefaultAuthTries = 12
	DefaultTimeout   = 10 * time.Second
	maxBurst         = 5000
	maxAuthTries     = 100
	// DrillDomain receives the burst: a name that cannot exist.
	DrillDomain = "drill.invalid"
)

// authSources is where the password-guessing step picks a fresh /24:
// far from 127.0.0.1, where the test account normally logs in (the guard
// never blocks an account on a network it knows).
var authSources = netip.MustParsePrefix("127.128.0.0/9")

// Admin is what the drill asks of the server's admin API.
// *admin.Client implements it.
type Admin interface {
	GuardSnapshot() (guard.Snapshot, error)
	QueueCount(f queue.Filter) (int, error)
	QueueOp(op string, f queue.Filter, reason string) (int, error)
	GuardRelease(target string, releaseMail bool) (int, error)
	GuardUnban(cidr string) error
}

// Server is what the drill knows from the server's config file (--config).
type Server struct {
	ConfigPath    string         // for the commands printed in the report
	Trusted       []netip.Prefix // [relay] trusted_networks
	MsgsPerMinute int            // the test user's effective limit (0: the guard's default, 30)
	AuthFails     int            // [guard] auth_fails_per_pair (0: default, 5)
	Admin         Admin          // the running server's admin API
}

// Options configures Run.
type Options struct {
	Target      string // MX listener HOST:PORT: the relay battery
	Submission  string // submission listener HOST:PORT (STARTTLS, AUTH)
	User        string // a test account on the server
	Password    string
	Burst       int  // messages in the burst; 0 → 40, or 10 over the user's limit when known
	AuthTries   int  // wrong passwords at most; 0 → 12 (more if the configured threshold is higher)
	AllowRemote bool // allow targets that are not loopback addresses
	LocalDomain string
	Server      *Server // nil: no config; nothing can be verified or cleaned up
	Timeout     time.Duration
	Rand        *rand.Rand // for source addresses; nil: seeded randomly
	Resolve     Resolver   // for the loopback check; nil: the system resolver
	Logger      *slog.Logger

	limit int // the test account's messages-per-minute limit, set by Check
}

// Result is a step's outcome.
type Result string

const (
	Fired    Result = "fired"     // the defence acted (for relay: the relay is closed)
	NotFired Result = "not_fired" // it did not, or the drill could not prove it did
	Skipped  Result = "skipped"   // the step could not be run meaningfully
)

// Step names.
const (
	StepRelay = "relay"
	StepAuth  = "auth brute force"
	StepBurst = "burst"
)

// Step is one defence's outcome.
type Step struct {
	Name   string     `json:"name"`
	Result Result     `json:"result"`
	Line   string     `json:"line"` // the one-line summary printed
	Source string     `json:"source,omitempty"`
	Rule   string     `json:"rule,omitempty"`
	Relay  *RelayStep `json:"relay,omitempty"`
	Auth   *AuthStep  `json:"auth,omitempty"`
	Burst  *BurstStep `json:"burst,omitempty"`
	Notes  []string   `json:"notes,omitempty"`
}

// RelayStep details the relay battery.
type RelayStep struct {
	LocalDomain   string   `json:"local_domain"`
	Probes        int      `json:"probes"` // relay probes (controls not counted)
	Relayed       int      `json:"relayed"`
	Incomplete    int      `json:"incomplete"`
	RelayedProbes []string `json:"relayed_probes,omitempty"`
}

// AuthStep details the password guessing.
type AuthStep struct {
	Tries     int    `json:"tries"`      // connections tried
	Failures  int    `json:"failures"`   // wrong passwords answered 535
	StopReply string `json:"stop_reply"` // what ended it: a reply, "connection refused", "connection closed"
	Banned    string `json:"banned,omitempty"`
}

// BurstStep details the burst.
type BurstStep struct {
	Sent      int            `json:"sent"`     // messages attempted
	Accepted  int            `json:"accepted"` // answered 250
	Deferred  int            `json:"deferred"` // answered 451
	Refused   int            `json:"refused"`  // other refusals
	LastError string         `json:"last_error,omitempty"`
	Isolated  bool           `json:"isolated"`
	Suspended bool           `json:"suspended"`
	Counts    map[string]int `json:"counts,omitempty"`
	HeldSince int            `json:"held_since_isolation"` // the guard's count of messages it held
	Held      int            `json:"held"`                 // drill messages in the held state (also those queued before the isolation)
	Queued    int            `json:"queued"`               // drill messages active or deferred
	Passed    int            `json:"passed"`               // accepted and not held: what got through
}

// Report is the outcome of Run.
type Report struct {
	Target     string   `json:"target"`
	Submission string   `json:"submission"`
	User       string   `json:"user"`
	Steps      []Step   `json:"steps"`
	CleanedUp  []string `json:"cleaned_up,omitempty"` // what the drill undid through the admin API
	Todo       []string `json:"todo,omitempty"`       // commands the administrator should run
	Passed     bool     `json:"passed"`               // no step NOT FIRED
}

// ErrUsage wraps errors in the options: nothing was sent.
var ErrUsage = errors.New("drill: bad options")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// Check validates opt and fills in defaults; it refuses non-loopback
// targets unless AllowRemote.
func Check(ctx context.Context, opt Options) (Options, error) {
	if opt.Target == "" {
		return opt, usageErr("--target HOST:PORT (the MX listener) is required")
	}
	if opt.Submission == "" {
		return opt, usageErr("--submission HOST:PORT is required")
	}
	opt.Target, opt.Submission = numericLocalhost(opt.Target), numericLocalhost(opt.Submission)
	for _, a := range []string{opt.Target, opt.Submission} {
		if err := CheckTarget(ctx, a, opt.AllowRemote, opt.Resolve); err != nil {
			return opt, fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	opt.User = strings.ToLower(strings.TrimSpace(opt.User))
	at := strings.LastIndexByte(opt.User, '@')
	if at <= 0 || at == len(opt.User)-1 || strings.ContainsAny(opt.User, " <>\r\n") {
		return opt, usageErr("--user must be the full address of a test account, got %q", opt.User)
	}
	if opt.Password == "" {
		return opt, usageErr("the test account's password is required")
	}
	if opt.LocalDomain == "" {
		opt.LocalDomain = opt.User[at+1:]
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Rand == nil {
		opt.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	limit := 30
	pair := 5
	if s := opt.Server; s != nil {
		if s.MsgsPerMinute > 0 {
			limit = s.MsgsPerMinute
		}
		if s.AuthFails > 0 {
			pair = s.AuthFails
		}
	}
	switch {
	case opt.Burst < 0 || opt.Burst > maxBurst:
		return opt, usageErr("--burst must be between 1 and %d", maxBurst)
	case opt.Burst == 0:
		opt.Burst = max(DefaultBurst, limit+10)
	}
	switch {
	case opt.AuthTries < 0 || opt.AuthTries > maxAuthTries:
		return opt, usageErr("auth tries must be between 1 and %d", maxAuthTries)
	case opt.AuthTries == 0:
		opt.AuthTries = max(DefaultAuthTries, pair+2)
	}
	opt.limit = limit
	return opt, nil
}

// Run runs the three steps and, with opt.Server.Admin, cleans up. It
// returns an error (wrapping ErrUsage) only when opt is unusable; every
// failure of the server or the network is part of the report.
func Run(ctx context.Context, opt Options) (Report, error) {
	opt, err := Check(ctx, opt)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Target: opt.Target, Submission: opt.Submission, User: opt.User}
	start := time.Now()

	relay := runRelay(ctx, opt)
	rep.Steps = append(rep.Steps, relay)
	var used []netip.Prefix
	if a, err := netip.ParseAddr(relay.Source); err == nil {
		used = append(used, netip.PrefixFrom(a, 24).Masked())
	}
	rep.Steps = append(rep.Steps, runAuth(ctx, opt, used))
	rep.Steps = append(rep.Steps, runBurst(ctx, opt))

	rep.Passed = true
	for _, s := range rep.Steps {
		opt.Logger.Info("drill step", "step", s.Name, "result", string(s.Result), "rule", s.Rule, "source", s.Source)
		if s.Result == NotFired {
			rep.Passed = false
		}
	}
	cleanUp(opt, &rep, start)
	return rep, nil
}

// --- step 1: relay ---

func runRelay(ctx context.Context, opt Options) Step {
	st := Step{Name: StepRelay}
	var src netip.Addr
	if canBind(opt.Target) {
		var exclude []netip.Prefix
		if opt.Server != nil {
			exclude = opt.Server.Trusted
		}
		// Prefer an address away from 127.0.0.0/24, which admins often trust
		// implicitly and where the drill's own burst comes from.
		a, ok := PickSource(Loopback, append(append([]netip.Prefix(nil), exclude...), netip.MustParsePrefix("127.0.0.0/24")), opt.Rand)
		if !ok {
			a, ok = PickSource(Loopback, exclude, opt.Rand)
		}
		if !ok {
			st.Result, st.Line = Skipped, "relay: skipped: every loopback address is trusted"
			return st
		}
		src = a
		st.Source = a.String()
		if opt.Server == nil {
			st.Notes = append(st.Notes, "without --config the drill cannot tell whether "+a.String()+" is in trusted_networks")
		}
	} else {
		st.Notes = append(st.Notes, "remote target: the battery runs from this host's own address, which must not be in the server's trusted_networks")
	}
	ro := relaytest.Options{Addr: opt.Target, LocalDomain: opt.LocalDomain, Timeout: opt.Timeout, Logger: opt.Logger}
	if src.IsValid() {
		ro.LocalAddr = src.String()
	}
	r, err := relaytest.Run(ctx, ro)
	rs := &RelayStep{LocalDomain: r.LocalDomain}
	st.Relay = rs
	var firstErr string
	for _, p := range r.Probes {
		if p.Control {
			continue
		}
		rs.Probes++
		if p.Relayed {
			rs.Relayed++
			rs.RelayedProbes = append(rs.RelayedProbes, p.Name)
		}
		if p.Err != "" {
			rs.Incomplete++
			if firstErr == "" {
				firstErr = p.Err
			}
		}
	}
	switch {
	case rs.Relayed > 0:
		st.Result = NotFired
		st.Line = fmt.Sprintf("relay: NOT FIRED — OPEN RELAY: %d of %d probes relayed (%s)", rs.Relayed, rs.Probes, strings.Join(rs.RelayedProbes, ", "))
	case err != nil && !errors.Is(err, relaytest.ErrIncomplete):
		st.Result = NotFired
		st.Line = fmt.Sprintf("relay: NOT FIRED — the battery could not run: %s", oneLine(err.Error()))
	case rs.Incomplete > 0:
		st.Result = NotFired
		st.Line = fmt.Sprintf("relay: NOT FIRED — %d of %d probes could not be completed (%s); none relayed, but closed is not proven",
			rs.Incomplete, rs.Probes, oneLine(firstErr))
	default:
		st.Result = Fired
		st.Line = fmt.Sprintf("relay: closed (0 of %d probes relayed)", rs.Probes)
	}
	return st
}

// --- step 2: password guessing ---

func runAuth(ctx context.Context, opt Options, used []netip.Prefix) Step {
	st := Step{Name: StepAuth}
	as := &AuthStep{}
	st.Auth = as
	var src netip.Addr
	if canBind(opt.Submission) {
		a, ok := PickSource(authSources, used, opt.Rand)
		if !ok {
			st.Result, st.Line = Skipped, "auth brute force: skipped: no fresh loopback network left"
			return st
		}
		src = a
		st.Source = a.String()
	} else {
		st.Notes = append(st.Notes, "remote target: wrong passwords come from this host's own address; it may be blocked or banned until clean-up")
	}
	// Bans in force before the step are not its doing.
	var before map[string]bool
	if opt.Server != nil && opt.Server.Admin != nil {
		if snap, err := opt.Server.Admin.GuardSnapshot(); err == nil {
			before = make(map[string]bool, len(snap.Bans))
			for _, b := range snap.Bans {
				before[b.CIDR] = true
			}
		}
	}
	stopped := false
	for as.Tries < opt.AuthTries && ctx.Err() == nil {
		as.Tries++
		wrong := fmt.Sprintf("drill-wrong-%016x", opt.Rand.Uint64())
		cl, err := dialSubmission(ctx, opt.Submission, src, opt.Timeout)
		if err == nil {
			err = cl.auth(ctx, opt.User, wrong)
			cl.close()
			if err == nil {
				st.Result = NotFired
				st.Line = "auth brute force: NOT FIRED — the server ACCEPTED a wrong password"
				return st
			}
		}
		if code, _ := replyOf(err); code == 535 {
			as.Failures++
			continue
		}
		as.StopReply = describe(err)
		stopped = true
		break
	}
	if ctx.Err() != nil && !stopped {
		st.Result = NotFired
		st.Line = "auth brute force: NOT FIRED — interrupted: " + ctx.Err().Error()
		return st
	}
	if opt.Server != nil && opt.Server.Admin != nil && src.IsValid() {
		if snap, err := opt.Server.Admin.GuardSnapshot(); err == nil {
			if b, ok := banFor(snap, src, before); ok {
				st.Rule = b.Rule
				as.Banned = b.CIDR
			}
		} else {
			st.Notes = append(st.Notes, "guard list: "+err.Error())
		}
	}
	switch {
	case !stopped:
		st.Result = NotFired
		st.Line = fmt.Sprintf("auth brute force: NOT FIRED — %d wrong passwords, every one answered 535", as.Failures)
	case as.Failures == 0:
		st.Result = NotFired
		st.Line = fmt.Sprintf("auth brute force: NOT FIRED — the first try already failed (%s): the drill proves nothing", as.StopReply)
	default:
		st.Result = Fired
		why := fmt.Sprintf("try %d: %s", as.Tries, as.StopReply)
		if st.Rule != "" {
			why = fmt.Sprintf("rule %s, %s banned; try %d: %s", st.Rule, as.Banned, as.Tries, as.StopReply)
		}
		st.Line = fmt.Sprintf("auth brute force: FIRED after %d failures (%s)", as.Failures, why)
	}
	return st
}

// banFor returns the ban covering ip, preferring the narrowest, among
// those not in old.
func banFor(snap guard.Snapshot, ip netip.Addr, old map[string]bool) (guard.Ban, bool) {
	var best guard.Ban
	bestBits := -1
	for _, b := range snap.Bans {
		p, err := ipnet.ParsePrefix(b.CIDR)
		if err != nil || !p.Contains(ip) || old[b.CIDR] {
			continue
		}
		if p.Bits() > bestBits {
			best, bestBits = b, p.Bits()
		}
	}
	return best, bestBits >= 0
}

// --- step 3: burst ---

// burstSource is where the test account's burst comes from: where it
// normally logs in, so the login detectors have nothing to say and the
// rate rules alone must act.
var burstSource = netip.MustParseAddr("127.0.0.1")

func runBurst(ctx context.Context, opt Options) Step {
	st := Step{Name: StepBurst}
	bs := &BurstStep{}
	st.Burst = bs
	var src netip.Addr
	if canBind(opt.Submission) {
		src = burstSource
		st.Source = src.String()
	}
	login := func() (*client, error) {
		cl, err := dialSubmission(ctx, opt.Submission, src, opt.Timeout)
		if err != nil {
			return nil, err
		}
		if err := cl.auth(ctx, opt.User, opt.Password); err != nil {
			cl.close()
			return nil, err
		}
		return cl, nil
	}
	cl, err := login()
	if err != nil {
		st.Result = NotFired
		st.Line = fmt.Sprintf("burst: NOT FIRED — could not log in as %s: %s", opt.User, describe(err))
		if code, _ := replyOf(err); code == 535 {
			st.Notes = append(st.Notes, "wrong password, or the account is suspended (mamori guard list)")
		}
		return st
	}
	reconnects := 0
	for n := 1; n <= opt.Burst && ctx.Err() == nil; n++ {
		if cl == nil {
			if reconnects >= 3 {
				break
			}
			reconnects++
			if cl, err = login(); err != nil {
				bs.LastError = describe(err)
				break
			}
		}
		bs.Sent++
		err := cl.send(ctx, opt.User, drillRcpt(n), drillMessage(opt.User, n))
		if err == nil {
			bs.Accepted++
			continue
		}
		code, _ := replyOf(err)
		bs.LastError = describe(err)
		switch {
		case code == 451:
			bs.Deferred++
		case code != 0 && code != 421:
			bs.Refused++
		default: // 421 or the connection broke: go on with a new one
			bs.Refused++
			cl.close()
			cl = nil
		}
	}
	if cl != nil {
		cl.close()
	}

	if opt.Server != nil && opt.Server.Admin != nil {
		checkIsolation(opt, &st)
	}
	// What got through: accepted before the isolation. The queue's held
	// count also includes messages queued before it, held afterwards.
	if bs.HeldSince > 0 {
		bs.Passed = max(bs.Accepted-bs.HeldSince, 0)
	} else {
		bs.Passed = max(bs.Accepted-bs.Held, 0)
	}
	switch {
	case bs.Isolated || bs.Suspended:
		st.Result = Fired
		what := "isolated"
		if bs.Suspended {
			what = "suspended"
		}
		st.Line = fmt.Sprintf("burst: FIRED — user %s after %d messages (rule %s), %d held", what, bs.Passed, st.Rule, bs.Held)
		if bs.Deferred > 0 {
			st.Line += fmt.Sprintf(", %d deferred (451)", bs.Deferred)
		}
	case bs.Deferred > 0:
		st.Result = Fired
		st.Line = fmt.Sprintf("burst: FIRED — 451 after %d accepted messages (%s)", bs.Accepted, bs.LastError)
		if opt.Server != nil && opt.Server.Admin != nil {
			st.Line += ", but the user is not isolated"
		}
	case opt.Server == nil || opt.Server.Admin == nil:
		st.Result = NotFired
		st.Line = fmt.Sprintf("burst: NOT VERIFIED — %d of %d messages accepted; without --config the drill cannot see whether they were held", bs.Accepted, bs.Sent)
	default:
		st.Result = NotFired
		st.Line = fmt.Sprintf("burst: NOT FIRED — %d of %d messages accepted, user not isolated (%d held, %d queued)", bs.Accepted, bs.Sent, bs.Held, bs.Queued)
	}
	if opt.Burst <= opt.limit {
		st.Notes = append(st.Notes, fmt.Sprintf("a burst of %d is not above the account's limit of %d messages per minute: the rate rule cannot fire", opt.Burst, opt.limit))
	}
	if bs.Passed > 0 {
		st.Notes = append(st.Notes, fmt.Sprintf("the %d message(s) that got through bounce (%s cannot exist): expect DSNs in %s's mailbox", bs.Passed, DrillDomain, opt.User))
	}
	if bs.Accepted+bs.Deferred < bs.Sent || bs.Sent < opt.Burst {
		st.Notes = append(st.Notes, fmt.Sprintf("%d of %d messages sent, %d refused; last error: %s", bs.Sent, opt.Burst, bs.Refused, bs.LastError))
	}
	return st
}

// checkIsolation asks the admin API what the guard made of the burst.
func checkIsolation(opt Options, st *Step) {
	bs, a := st.Burst, opt.Server.Admin
	// Isolation is decided at the end of DATA, before the 250: it is
	// visible at once. A short wait covers a guard that reports lazily.
	for try := 0; try < 5; try++ {
		snap, err := a.GuardSnapshot()
		if err != nil {
			st.Notes = append(st.Notes, "guard list: "+err.Error())
			break
		}
		for _, i := range snap.Isolated {
			if strings.EqualFold(i.User, opt.User) {
				bs.Isolated, st.Rule, bs.Counts, bs.HeldSince = true, i.Rule, i.Counts, i.Held
			}
		}
		for _, s := range snap.Suspended {
			if strings.EqualFold(s.User, opt.User) {
				bs.Suspended = true
				if st.Rule == "" {
					st.Rule = s.Rule
				}
			}
		}
		if bs.Isolated || bs.Suspended {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	f := queue.Filter{User: opt.User, To: "@" + DrillDomain, State: queue.StateHeld}
	var err error
	if bs.Held, err = a.QueueCount(f); err != nil {
		st.Notes = append(st.Notes, "queue count: "+err.Error())
	}
	for _, s := range []queue.State{queue.StateActive, queue.StateDeferred} {
		f.State = s
		n, err := a.QueueCount(f)
		if err != nil {
			st.Notes = append(st.Notes, "queue count: "+err.Error())
		}
		bs.Queued += n
	}
}

func drillRcpt(n int) string { return fmt.Sprintf("drill-%d@%s", n, DrillDomain) }

func drillMessage(from string, n int) []byte {
	return fmt.Appendf(nil, "From: <%s>\r\nTo: <%s>\r\nSubject: mamori drill %d\r\nDate: %s\r\nMessage-ID: <drill-%d-%d@%s>\r\n\r\n"+
		"This message was sent by `mamori drill` to test the server's defences.\r\n",
		from, drillRcpt(n), n, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), n, DrillDomain)
}

// --- clean-up ---

// cleanUp undoes what the drill left behind: its messages, the test
// user's isolation, the bans of its source addresses. Without the admin
// API it lists the commands instead.
func cleanUp(opt Options, rep *Report, start time.Time) {
	var sources []netip.Addr
	for _, s := range rep.Steps {
		if a, err := netip.ParseAddr(s.Source); err == nil && s.Name != StepBurst {
			sources = append(sources, a)
		}
	}
	cfg := "FILE"
	if opt.Server != nil && opt.Server.ConfigPath != "" {
		cfg = opt.Server.ConfigPath
	}
	if opt.Server == nil || opt.Server.Admin == nil {
		rep.Todo = append(rep.Todo,
			fmt.Sprintf("mamori queue delete --user %s --to @%s --config %s", opt.User, DrillDomain, cfg),
			fmt.Sprintf("mamori guard release %s --config %s", opt.User, cfg))
		for _, a := range sources {
			rep.Todo = append(rep.Todo, fmt.Sprintf("mamori guard unban %s --config %s   # if listed by mamori guard list", a, cfg))
		}
		return
	}
	a := opt.Server.Admin
	todo := func(cmd string, err error) {
		rep.Todo = append(rep.Todo, fmt.Sprintf("%s --config %s   # failed: %v", cmd, cfg, err))
	}
	f := queue.Filter{User: opt.User, To: "@" + DrillDomain}
	if n, err := a.QueueOp("delete", f, ""); err != nil {
		todo(fmt.Sprintf("mamori queue delete --user %s --to @%s", opt.User, DrillDomain), err)
	} else {
		rep.CleanedUp = append(rep.CleanedUp, fmt.Sprintf("deleted %d drill message(s)", n))
	}
	snap, err := a.GuardSnapshot()
	if err != nil {
		todo("mamori guard list", err)
		return
	}
	release := func(target string) {
		if _, err := a.GuardRelease(target, false); err != nil {
			todo("mamori guard release "+target, err)
			return
		}
		rep.CleanedUp = append(rep.CleanedUp, "released "+target)
	}
	released := false
	for _, i := range snap.Isolated {
		if strings.EqualFold(i.User, opt.User) && !released {
			release(opt.User)
			released = true
		}
	}
	for _, s := range snap.Suspended {
		if strings.EqualFold(s.User, opt.User) && !released {
			release(opt.User)
			released = true
		}
	}
	// The burst's address may have been isolated as well (its counters
	// saw every drill message); release it only if that happened during
	// the drill.
	for _, i := range snap.Isolated {
		if i.User == "" && i.IP == burstSource.String() && !i.Since.Before(start.Add(-time.Second)) && canBind(opt.Submission) {
			release(i.IP)
		}
	}
	for _, b := range snap.Bans {
		p, err := ipnet.ParsePrefix(b.CIDR)
		if err != nil || !p.IsSingleIP() {
			continue // a network ban is the administrator's, not the drill's
		}
		for _, s := range sources {
			if p.Addr() == s {
				if err := a.GuardUnban(b.CIDR); err != nil {
					todo("mamori guard unban "+b.CIDR, err)
				} else {
					rep.CleanedUp = append(rep.CleanedUp, "unbanned "+b.CIDR)
				}
			}
		}
	}
}

// WriteText prints one line per defence, the clean-up and a verdict.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "mamori drill: MX %s, submission %s, test account %s\n", r.Target, r.Submission, r.User)
	for _, s := range r.Steps {
		b.WriteString(s.Line)
		if s.Source != "" {
			fmt.Fprintf(&b, "   [from %s]", s.Source)
		}
		b.WriteByte('\n')
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "    note: %s\n", n)
		}
	}
	if len(r.CleanedUp) > 0 {
		fmt.Fprintf(&b, "clean-up: %s\n", strings.Join(r.CleanedUp, "; "))
	}
	if len(r.Todo) > 0 {
		b.WriteString("clean-up: run\n")
		for _, t := range r.Todo {
			fmt.Fprintf(&b, "  %s\n", t)
		}
	}
	if r.Passed {
		b.WriteString("drill passed: every defence fired\n")
	} else {
		b.WriteString("drill FAILED: some defences did not fire (see NOT FIRED above)\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("drill: writing report: %w", err)
	}
	return nil
}
