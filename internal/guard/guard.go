package guard

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are the rate limits of one local sender key (a trusted IP, a user,
// or the envelope sender of a trusted unauthenticated client). A zero field
// means the default (for an override: the value in Config.Local).
type Limits struct {
	MsgsPerMinute     int // default 30
	RcptsPerMinute    int // default 100
	RcptsPerHour      int // default 300
	RcptsPerDay       int // default 1000
	NewRcptsPerMinute int // first-time recipients (never mailed before by this sender), default 60
}

// Config tunes the guard. Zero fields take the defaults noted.
type Config struct {
	Local                 Limits            // local senders: trusted IPs (also keyed per envelope sender) and users
	Overrides             map[string]Limits // key: user address, or an IP/CIDR, for known bulk senders
	HoldCap               int               // messages held per isolated sender, default 2000; beyond: Defer 451 4.7.1
	UnknownRcptRatio      float64           // default 0.5, judged once a sender has >= 20 RCPTs in 10 min
	InboundMsgsPerMinute  int               // untrusted unauthenticated client per IP, default 60 → Defer 451 4.7.1
	InboundRcptsPerMinute int               // per IP, default 200
	MaxConnections        int               // concurrent per listener pool and class of client, default 2000
	MaxConnsPerIP         int               // default 20 (untrusted); trusted IPs: 4×
	MaxConnsPerNet        int               // per /24 or /48, default 60; trusted networks: 4×
	// PoolConnFactor multiplies the per-IP and per-network caps in a
	// pool: mail clients keep several IMAP connections open per account,
	// and an office behind one NAT address has many accounts.
	PoolConnFactor      map[Pool]int
	ConnsPerMinute      int              // new connections per IP per minute, default 120
	AuthFailsPerPair    int              // IP+account failures in 15 min that block the pair, default 5
	AuthFailsPerIP      int              // all failures from an IP in 15 min that ban the IP, default 20
	AuthUsersPerNet     int              // distinct usernames failing from one /24|/48 in 15 min that ban the IP (spraying), default 5
	BanBase, BanMax     time.Duration    // first ban length and cap; each new strike ×4; defaults 10m, 7 days
	LoginNetworks       int              // distinct networks one account logs in from within 10 min (one of them new) → suspend, default 3
	AuthFailsPerAccount int              // failures for one login name in 15 min, from any source, that throttle it for sources it does not trust, default 10
	AccountThrottle     time.Duration    // how long a throttled name is refused from sources it does not trust, default 15 min
	HistoryFactor       float64          // messages in the last hour > factor × the account's usual hourly peak (and > MsgsPerMinute) → isolate, default 10
	Now                 func() time.Time // tests inject a clock

	// Additions to the list.
	HeaderFromMismatches int           // messages per user in 10 min whose header From the login does not own, default 3; more → isolate
	InboundAuthFails     int           // messages from one outside IP failing SPF or DMARC in 10 min before its mail is deferred, default 20
	ContentHits          int           // messages per local sender in 10 min refused or held by the content policy (executables, viruses), default 3 → isolate: a PC suddenly mailing executables is a worm sign
	MaxTracked           int           // entries in each bounded outsider table (IPs, networks, IP+account pairs, failing usernames), default 100,000
	SaveInterval         time.Duration // how often Run saves changed state, default 10 s

	// OnDecision, when set, is told every final decision of ConnectTo,
	// AuthCheck (a Drop), AuthResult, Rcpt and Message, Accept included
	// (rule ""), for metrics. It is called without the guard's lock held,
	// on the caller's goroutine, and must be cheap.
	OnDecision func(stage, rule string, v Verdict)

	// Node names this node in its decisions (guard list shows it).
	Node string
	// Replicator, when set, takes this node's bans, unbans, isolations,
	// suspensions and releases to the other nodes of a cluster (share.go).
	Replicator Replicator
	// Counters, when set, keeps local senders' rate windows cluster-wide
	// (counters.go); CountersTimeout bounds one call, default 200 ms.
	Counters        Counters
	CountersTimeout time.Duration
}

// Fixed parameters of the detectors.
const (
	unknownMinRcpts    = 20          // RCPTs in 10 min before the unknown ratio is judged
	newNetWindow       = tenMinMS    // a login from a new network is watched this long
	newNetMaxMsgs      = 10          // messages from the new network within newNetWindow before suspension
	failThenSuccess    = 3           // failures from one network before a success from it, a network new to the account
	ownerNetDays       = 2           // distinct days of successful logins that make a network the owner's
	maxSavedThrottles  = 10_000      // per-account failure counters saved across a restart
	maxListedThrottles = 1000        // throttled names in a Snapshot
	historyMinAge      = 24 * hourMS // hourly history must span this long before it is trusted
	knownRcptsCap      = 5000        // first-time-recipient memory per sender
	loginNetsCap       = 32          // networks remembered per account
	netLoginMemory     = 30 * dayMS  // a successful login protects its network this long
	sampleCount        = 5           // sample subjects/recipients per alert
	eventQueue         = 1024        // pending hook calls before new ones are dropped
	protectedFactor    = 5           // per-host rules on a host (spraying rules on a network) with recent logins need this × the threshold
	floodFactor        = 5           // failures for a name beyond this × AuthFailsPerAccount block even trusted hosts
	idleStats          = 2 * dayMS   // local sender counters idle this long are dropped
	sweepEvery         = time.Minute // how often Run sweeps expired state
	userFailRingSize   = 8           // recent failures remembered per login name
	defaultMaxTracked  = 100_000
)

func (l Limits) orElse(d Limits) Limits {
	if l.MsgsPerMinute <= 0 {
		l.MsgsPerMinute = d.MsgsPerMinute
	}
	if l.RcptsPerMinute <= 0 {
		l.RcptsPerMinute = d.RcptsPerMinute
	}
	if l.RcptsPerHour <= 0 {
		l.RcptsPerHour = d.RcptsPerHour
	}
	if l.RcptsPerDay <= 0 {
		l.RcptsPerDay = d.RcptsPerDay
	}
	if l.NewRcptsPerMinute <= 0 {
		l.NewRcptsPerMinute = d.NewRcptsPerMinute
	}
	return l
}

func orInt(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

func orDur(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}

func orFloat(v, d float64) float64 {
	if v <= 0 {
		return d
	}
	return v
}

func (c Config) withDefaults() Config {
	c.Local = c.Local.orElse(Limits{MsgsPerMinute: 30, RcptsPerMinute: 100, RcptsPerHour: 300, RcptsPerDay: 1000, NewRcptsPerMinute: 60})
	c.HoldCap = orInt(c.HoldCap, 2000)
	if c.CountersTimeout <= 0 {
		c.CountersTimeout = defaultCountersTimeout
	}
	c.UnknownRcptRatio = orFloat(c.UnknownRcptRatio, 0.5)
	c.InboundMsgsPerMinute = orInt(c.InboundMsgsPerMinute, 60)
	c.InboundRcptsPerMinute = orInt(c.InboundRcptsPerMinute, 200)
	c.MaxConnections = orInt(c.MaxConnections, 2000)
	c.MaxConnsPerIP = orInt(c.MaxConnsPerIP, 20)
	c.MaxConnsPerNet = orInt(c.MaxConnsPerNet, 60)
	c.ConnsPerMinute = orInt(c.ConnsPerMinute, 120)
	c.AuthFailsPerPair = orInt(c.AuthFailsPerPair, 5)
	c.AuthFailsPerIP = orInt(c.AuthFailsPerIP, 20)
	c.AuthUsersPerNet = orInt(c.AuthUsersPerNet, 5)
	c.BanBase = orDur(c.BanBase, 10*time.Minute)
	c.BanMax = orDur(c.BanMax, 7*24*time.Hour)
	c.LoginNetworks = orInt(c.LoginNetworks, 3)
	c.AuthFailsPerAccount = orInt(c.AuthFailsPerAccount, 10)
	c.AccountThrottle = orDur(c.AccountThrottle, 15*time.Minute)
	c.HistoryFactor = orFloat(c.HistoryFactor, 10)
	c.HeaderFromMismatches = orInt(c.HeaderFromMismatches, 3)
	c.InboundAuthFails = orInt(c.InboundAuthFails, 20)
	c.ContentHits = orInt(c.ContentHits, 3)
	c.MaxTracked = orInt(c.MaxTracked, defaultMaxTracked)
	c.SaveInterval = orDur(c.SaveInterval, 10*time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if c.UnknownRcptRatio > 1 {
		return fmt.Errorf("unknown recipient ratio %v: must be at most 1", c.UnknownRcptRatio)
	}
	if c.BanMax < c.BanBase {
		return fmt.Errorf("ban max %v is shorter than ban base %v", c.BanMax, c.BanBase)
	}
	return nil
}

type prefixLimits struct {
	p netip.Prefix
	l Limits
}

// Guard is the engine. All methods are safe for concurrent use.
type Guard struct {
	pol    atomic.Pointer[policy] // limits in force; replaced whole by SetConfig
	shared sharedState            // health of the shared counters (clustered)
	log    *slog.Logger
	hooks  Hooks
	store  Persister
	seed   maphash.Seed

	events chan event

	saveMu    sync.Mutex // serialises saves
	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex // protects everything below
	dirty bool

	conns   map[poolKey]int
	connIP  map[poolIP]int32
	connNet map[poolNet]int32

	ips   *lru[netip.Addr, ipState]    // by hostOf: IPv4 address or IPv6 /64
	nets  *lru[netip.Prefix, netState] // by netOf: /24 or /48
	pairs *lru[pairKey, pairState]     // by hostOf and login name
	names *lru[string, nameState]      // failures per login name, existing or not

	byIP   map[netip.Addr]*senderStats
	byUser map[string]*senderStats
	byFrom map[string]*senderStats
	active activeSenders // who sent recently, for TopSenders

	accounts  map[string]*account
	netLogins map[netip.Prefix]int64 // last successful login from a network, ms

	isoIP     map[netip.Addr]*Isolation
	isoUser   map[string]*Isolation
	suspended map[string]Suspension

	bans banTable
}

// ipState is what the guard knows about any client IP.
type ipState struct {
	conns     window // per minute
	msgs      window // inbound messages per minute
	rcpts     window // inbound recipients per minute
	spoofs    window // inbound messages failing SPF or DMARC per 10 minutes
	authFails window // per 15 min
}

// New builds a guard and loads its saved state from p (nil: none). hooks
// and log may be nil.
func New(cfg Config, hooks Hooks, p Persister, log *slog.Logger) (*Guard, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("guard config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pol, err := newPolicy(cfg)
	if err != nil {
		return nil, err
	}
	g := &Guard{
		log:       log,
		hooks:     hooks,
		store:     p,
		seed:      maphash.MakeSeed(),
		events:    make(chan event, eventQueue),
		conns:     make(map[poolKey]int),
		connIP:    make(map[poolIP]int32),
		connNet:   make(map[poolNet]int32),
		ips:       newLRU[netip.Addr, ipState](cfg.MaxTracked),
		nets:      newLRU[netip.Prefix, netState](cfg.MaxTracked),
		pairs:     newLRU[pairKey, pairState](cfg.MaxTracked),
		names:     newLRU[string, nameState](cfg.MaxTracked),
		byIP:      make(map[netip.Addr]*senderStats),
		byUser:    make(map[string]*senderStats),
		byFrom:    make(map[string]*senderStats),
		active:    newActiveSenders(),
		accounts:  make(map[string]*account),
		netLogins: make(map[netip.Prefix]int64),
		isoIP:     make(map[netip.Addr]*Isolation),
		isoUser:   make(map[string]*Isolation),
		suspended: make(map[string]Suspension),
		bans:      newBanTable(),
	}
	g.pol.Store(pol)
	if p != nil {
		b, err := p.LoadGuardState()
		if err != nil {
			return nil, fmt.Errorf("load guard state: %w", err)
		}
		if len(b) > 0 {
			if err := g.restore(b); err != nil {
				return nil, fmt.Errorf("load guard state: %w", err)
			}
		}
	}
	return g, nil
}

// policy is the configuration in force with its overrides parsed.
type policy struct {
	cfg    Config
	ovAddr map[string]Limits // overrides by address (users, envelope senders)
	ovIP   map[netip.Addr]Limits
	ovNet  []prefixLimits // longest prefix first
}

// conf is the configuration in force.
func (g *Guard) conf() *Config { return &g.pol.Load().cfg }

// SetConfig puts a new configuration in force (mamori reload): limits,
// overrides, thresholds and ban times. Senders already tracked get their
// new limits at once; their counts are kept. What sizes the engine —
// MaxTracked, SaveInterval — its hooks (Now, OnDecision) and its place in
// a cluster (Node, Replicator) stay as at New. An invalid cfg is refused and the old one stays.
func (g *Guard) SetConfig(cfg Config) error {
	old := g.conf()
	cfg.MaxTracked, cfg.SaveInterval, cfg.Now, cfg.OnDecision = old.MaxTracked, old.SaveInterval, old.Now, old.OnDecision
	cfg.Node, cfg.Replicator = old.Node, old.Replicator
	cfg.Counters, cfg.CountersTimeout = old.Counters, old.CountersTimeout
	cfg.Node, cfg.Replicator = old.Node, old.Replicator
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("guard config: %w", err)
	}
	pol, err := newPolicy(cfg)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pol.Store(pol)
	for ip, st := range g.byIP {
		st.limits = g.limitsForIP(ip)
	}
	for u, st := range g.byUser {
		st.limits = g.limitsForAddr(u)
	}
	for f, st := range g.byFrom {
		st.limits = g.limitsForAddr(f)
	}
	return nil
}

func newPolicy(cfg Config) (*policy, error) {
	g := &policy{cfg: cfg, ovAddr: make(map[string]Limits), ovIP: make(map[netip.Addr]Limits)}
	for k, l := range cfg.Overrides {
		l = l.orElse(cfg.Local)
		key := strings.TrimSpace(k)
		if strings.Contains(key, "/") {
			p, err := netip.ParsePrefix(key)
			if err != nil {
				return nil, fmt.Errorf("guard override %q: %w", k, err)
			}
			p, _ = normPrefix(p)
			g.ovNet = append(g.ovNet, prefixLimits{p, l})
			continue
		}
		if a, err := netip.ParseAddr(key); err == nil {
			g.ovIP[normAddr(a)] = l
			continue
		}
		if key == "" {
			return nil, errors.New("guard override with an empty key")
		}
		g.ovAddr[normUser(key)] = l
	}
	// Most specific prefix first, so a /32 inside an overridden /24 wins.
	for i := 1; i < len(g.ovNet); i++ {
		for j := i; j > 0 && g.ovNet[j].p.Bits() > g.ovNet[j-1].p.Bits(); j-- {
			g.ovNet[j], g.ovNet[j-1] = g.ovNet[j-1], g.ovNet[j]
		}
	}
	return g, nil
}

// limitsForIP resolves the limits of an IP key (once, when its counters are
// created).
func (g *Guard) limitsForIP(ip netip.Addr) Limits {
	p := g.pol.Load()
	if l, ok := p.ovIP[ip]; ok {
		return l
	}
	for _, o := range p.ovNet {
		if o.p.Contains(ip) {
			return o.l
		}
	}
	return p.cfg.Local
}

func (g *Guard) limitsForAddr(addr string) Limits {
	p := g.pol.Load()
	if l, ok := p.ovAddr[addr]; ok {
		return l
	}
	return p.cfg.Local
}

// Run does the guard's background work: hook calls (on a goroutine of
// their own, since they may be slow), saving changed state every
// SaveInterval, sweeping expired entries. It returns when ctx ends, after
// the pending hook calls and a final save.
func (g *Guard) Run(ctx context.Context) {
	hooksDone := make(chan struct{})
	go func() {
		defer close(hooksDone)
		g.runHooks(ctx)
	}()
	save := time.NewTicker(g.conf().SaveInterval)
	defer save.Stop()
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			<-hooksDone
			if err := g.save(); err != nil {
				g.log.Error("guard final save", "err", err.Error())
			}
			return
		case <-save.C:
			g.mu.Lock()
			dirty := g.dirty
			g.mu.Unlock()
			if dirty {
				if err := g.save(); err != nil {
					g.log.Error("guard save", "err", err.Error())
				}
			}
		case <-sweep.C:
			g.sweep()
		}
	}
}

// runHooks delivers queued hook calls until ctx ends, then the ones still
// pending.
func (g *Guard) runHooks(ctx context.Context) {
	for {
		select {
		case ev := <-g.events:
			g.deliver(ev)
		case <-ctx.Done():
			for {
				select {
				case ev := <-g.events:
					g.deliver(ev)
				default:
					return
				}
			}
		}
	}
}

// Close saves the state one last time. Calling it again does nothing.
func (g *Guard) Close() error {
	g.closeOnce.Do(func() { g.closeErr = g.save() })
	return g.closeErr
}

// event is work for the hooks, queued by the hot path and done by Run.
type event struct {
	alert    Alert
	hold     bool // call HoldQueued first
	holdIP   netip.Addr
	holdUser string
	noAlert  bool // a decision of another node: hold only, it alerted
}

// enqueue hands ev to Run without ever blocking; called with g.mu held.
func (g *Guard) enqueue(ev event, lg *logBuf) {
	select {
	case g.events <- ev:
	default:
		lg.add(slog.LevelError, "guard hook queue full: alert dropped",
			slog.String("kind", ev.alert.Kind), slog.String("rule", ev.alert.Rule),
			slog.String("ip", ev.alert.IP), slog.String("user", ev.alert.User))
	}
}

func (g *Guard) deliver(ev event) {
	if g.hooks == nil {
		return
	}
	// The maps may be shared with the isolation record; the hook gets its own.
	ev.alert.Counts = maps.Clone(ev.alert.Counts)
	ev.alert.Extra = maps.Clone(ev.alert.Extra)
	if ev.hold {
		n, err := g.hooks.HoldQueued(ev.holdIP, ev.holdUser, ev.alert.Rule)
		if err != nil {
			g.log.Error("guard hold queued mail", "ip", ev.alert.IP, "user", ev.holdUser, "rule", ev.alert.Rule, "err", err.Error())
			if ev.alert.Extra == nil {
				ev.alert.Extra = map[string]string{}
			}
			ev.alert.Extra["hold_error"] = err.Error()
		}
		if ev.alert.Counts == nil {
			ev.alert.Counts = map[string]int{}
		}
		ev.alert.Counts["queued_held"] = n
	}
	if ev.noAlert {
		return
	}
	g.hooks.Alert(ev.alert)
}

// logBuf collects log records under the lock, to be written after it is
// released. The fixed array keeps the common paths allocation-free.
type logBuf struct {
	log  *slog.Logger
	n    int
	recs [3]logRec
	// ends are accounts whose sessions end (a suspension), told to ender
	// by emit, after the lock: never dropped with a full hook queue.
	ends  []string
	ender SessionEnder
}

// on reports whether decisions are logged at all; the paths a flood takes
// check it first, so that a discarded log costs no allocation.
func (b *logBuf) on() bool { return b.log.Enabled(context.Background(), slog.LevelInfo) }

type logRec struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
}

func (b *logBuf) add(level slog.Level, msg string, attrs ...slog.Attr) {
	if b.n < len(b.recs) {
		b.recs[b.n] = logRec{level, msg, attrs}
		b.n++
	}
}

func (b *logBuf) emit() {
	for _, r := range b.recs[:b.n] {
		b.log.LogAttrs(context.Background(), r.level, r.msg, r.attrs...)
	}
	if b.ender != nil {
		for _, u := range b.ends {
			b.ender.EndSessions(u)
		}
	}
}

// endSessions asks emit to end user's sessions (called with g.mu held).
func (g *Guard) endSessions(user string, lg *logBuf) {
	if e, ok := g.hooks.(SessionEnder); ok {
		lg.ender = e
		lg.ends = append(lg.ends, user)
	}
}

// decision logs d (unless it is Accept) with the attributes given.
func (b *logBuf) decision(stage string, d Decision, attrs ...slog.Attr) {
	if d.Verdict == Accept {
		return
	}
	a := append([]slog.Attr{slog.String("stage", stage), slog.String("verdict", d.Verdict.String()),
		slog.String("rule", d.Rule), slog.Int("code", d.Code)}, attrs...)
	b.add(slog.LevelInfo, "guard decision", a...)
}

// String names a verdict for logs.
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Hold:
		return "hold"
	case Defer:
		return "defer"
	case Reject:
		return "reject"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Replies. Decisions are values built from constants: no allocation.
var (
	decBanned      = Decision{Verdict: Drop, Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Access denied: your address is banned", Rule: "ban"}
	decBannedLater = Decision{Verdict: Drop, Code: 421, Enhanced: [3]int{4, 7, 1}, Text: "Too many authentication failures from your address; closing connection", Rule: "ban"}
	decConnGlobal  = Decision{Verdict: Drop, Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Server busy, try again later", Rule: "conn.global"}
	decConnPerIP   = Decision{Verdict: Drop, Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many connections from your address, try again later", Rule: "conn.per_ip"}
	decConnPerNet  = Decision{Verdict: Drop, Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many connections from your network, try again later", Rule: "conn.per_net"}
	decConnRate    = Decision{Verdict: Drop, Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Connection rate limit exceeded, try again later", Rule: "conn.rate"}
	decThrottled   = Decision{Verdict: Defer, Code: 454, Enhanced: [3]int{4, 7, 0}, Text: "Temporary authentication failure", Rule: "auth.account_throttle"}
	decPairBlocked = Decision{Verdict: Defer, Code: 454, Enhanced: [3]int{4, 7, 0}, Text: "Too many authentication failures, try again later", Rule: "auth.bruteforce"}
	decPairDrop    = Decision{Verdict: Drop, Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many authentication failures, try again later", Rule: "auth.bruteforce"}
	decHoldCap     = Decision{Verdict: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Sending from this account or host is suspended pending review; contact your administrator"}
	decAuthFails   = Decision{Verdict: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Too many messages from your address fail SPF or DMARC, try again later", Rule: "auth.spoofing"}
	decInMsgs      = Decision{Verdict: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Too many messages from your address, try again later", Rule: "rate.msgs_per_minute"}
	decInRcpts     = Decision{Verdict: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Too many recipients from your address, try again later", Rule: "rate.rcpts_per_minute"}
)

// Normalisation. Addresses are compared case-insensitively; IPv4-mapped
// IPv6 addresses are IPv4.

func normAddr(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

func normUser(u string) string { return strings.ToLower(strings.TrimSpace(u)) }

// InvalidCredentials is the reply to a wrong password (or an unknown
// login). The guard answers a suspended account with exactly this reply
// (Rule set to the suspension's rule), so that neither a right password nor
// the account's existence shows; protocol front ends answer a plain wrong
// password from this value too, so the two replies are byte-identical.
var InvalidCredentials = Decision{Verdict: Reject, Code: 535, Enhanced: [3]int{5, 7, 8}, Text: "Authentication credentials invalid"}

// hostOf is the key of one client host: the IPv4 address, or the /64 of an
// IPv6 address (one host, or one LAN segment, gets a whole /64: an
// attacker rotating through it must not get fresh counters per address).
// Per-IP counters, IP+account pairs and automatic bans of outsiders use it.
func hostOf(ip netip.Addr) netip.Addr {
	if !ip.Is6() {
		return ip
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return ip
	}
	return p.Addr()
}

// hostPrefix is hostOf as a prefix (a /32 or a /64), what an automatic ban
// of one client covers.
func hostPrefix(ip netip.Addr) netip.Prefix {
	if ip.Is6() {
		return netip.PrefixFrom(hostOf(ip), 64)
	}
	return netip.PrefixFrom(ip, 32)
}

// netOf is the network an address is judged with: its /24 (IPv4) or /48
// (IPv6), the usual unit of one customer or office.
func netOf(ip netip.Addr) netip.Prefix {
	bits := 24
	if ip.Is6() {
		bits = 48
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

func (g *Guard) clock() (time.Time, int64) {
	t := g.conf().Now()
	return t, t.UnixMilli()
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
