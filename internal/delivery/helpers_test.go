package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/testdns"
)

// ---- fake spool ----

type fakeLease struct {
	sends   atomic.Int32 // BeginSend calls that said yes
	meta    queue.Meta
	revoked atomic.Bool
}

func (l *fakeLease) Message() queue.Meta { return l.meta }
func (l *fakeLease) Revoked() bool       { return l.revoked.Load() }
func (l *fakeLease) BeginSend() bool {
	if l.revoked.Load() {
		return false
	}
	l.sends.Add(1)
	return true
}

type finishRec struct {
	lease *fakeLease
	a     Attempt
}

type enqRec struct {
	meta queue.Meta
	body []byte
}

type fakeSpool struct {
	leases chan *fakeLease
	done   chan struct{}

	mu       sync.Mutex
	bodies   map[string][]byte
	bodyErr  error
	finished []finishRec
	enqueued []enqRec
	nextID   int
}

func newSpool() *fakeSpool {
	return &fakeSpool{
		leases: make(chan *fakeLease, 1000),
		done:   make(chan struct{}, 1000),
		bodies: map[string][]byte{},
	}
}

// add queues a message; zero fields get test defaults.
func (f *fakeSpool) add(m queue.Meta, body string) *fakeLease {
	f.mu.Lock()
	f.nextID++
	if m.ID == "" {
		m.ID = fmt.Sprintf("M%03d", f.nextID)
	}
	f.bodies[m.ID] = []byte(body)
	f.mu.Unlock()
	if m.Received.IsZero() {
		m.Received = time.Now().Add(-time.Minute)
	}
	if m.Origin == "" {
		m.Origin = queue.OriginSubmitted
	}
	m.Size = int64(len(body))
	l := &fakeLease{meta: m}
	f.leases <- l
	return l
}

func (f *fakeSpool) Next(ctx context.Context) (Lease, error) {
	select {
	case l := <-f.leases:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeSpool) Finish(l Lease, a Attempt) error {
	f.mu.Lock()
	f.finished = append(f.finished, finishRec{l.(*fakeLease), a})
	f.mu.Unlock()
	f.done <- struct{}{}
	return nil
}

func (f *fakeSpool) Body(id string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bodyErr != nil {
		return nil, f.bodyErr
	}
	b, ok := f.bodies[id]
	if !ok {
		return nil, errors.New("no such message")
	}
	return b, nil
}

func (f *fakeSpool) Enqueue(m queue.Meta, body []byte) (queue.Meta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	m.ID = fmt.Sprintf("D%03d", f.nextID)
	f.enqueued = append(f.enqueued, enqRec{m, body})
	return m, nil
}

func (f *fakeSpool) results() ([]finishRec, []enqRec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]finishRec(nil), f.finished...), append([]enqRec(nil), f.enqueued...)
}

// run runs s until n attempts were finished, then stops it and checks that
// Run returns.
func run(t *testing.T, s *Scheduler, sp *fakeSpool, n int) ([]finishRec, []enqRec) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	timeout := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-sp.done:
		case <-timeout:
			cancel()
			t.Fatalf("only %d of %d attempts finished", i, n)
		}
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	return sp.results()
}

// ---- logs ----

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// events returns the log records whose message is msg.
func (l *logBuf) events(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// ---- scheduler ----

func testConfig() Config {
	return Config{
		Hostname:       "mamori.test",
		ConnectTimeout: 2 * time.Second,
		CommandTimeout: 5 * time.Second,
		DataTimeout:    5 * time.Second,
	}
}

func newTestScheduler(cfg Config, sp Spool, local LocalDeliverer, res *resolver.Resolver) (*Scheduler, *logBuf) {
	lb := &logBuf{}
	s := NewScheduler(cfg, sp, local, res, slog.New(slog.NewJSONHandler(lb, nil)))
	return s, lb
}

// ---- remote SMTP server ----

type gotMsg struct {
	from  string
	rcpts []string
	body  string
	tls   bool
	helo  string
	size  int64
}

type remote struct {
	addr string
	port int
	srv  *smtp.Server

	mu        sync.Mutex
	rcptReply map[string]*smtp.SMTPError
	mailReply *smtp.SMTPError
	dataReply *smtp.SMTPError
	mailHook  func()
	msgs      []gotMsg
	mails     int // MAIL commands seen
	conns     int
	active    int
	maxActive int
	// Open mail transactions (MAIL until the end of DATA or RSET). Unlike
	// connections, these end before the client's QUIT, so they measure the
	// client's concurrency exactly.
	txns, maxTxns int
}

func (r *remote) maxTransactions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxTxns
}

func startRemote(t *testing.T, tlsConfig *tls.Config) *remote {
	t.Helper()
	r := &remote{rcptReply: map[string]*smtp.SMTPError{}}
	r.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &remoteSession{r: r, c: c}, nil
	}))
	r.srv.Domain = "remote.test"
	r.srv.TLSConfig = tlsConfig
	r.srv.ReadTimeout = 10 * time.Second
	r.srv.WriteTimeout = 10 * time.Second
	r.srv.MaxMessageBytes = 1 << 20
	r.srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.port = ln.Addr().(*net.TCPAddr).Port
	go func() { _ = r.srv.Serve(&countingListener{Listener: ln, r: r}) }()
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *remote) got() []gotMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]gotMsg(nil), r.msgs...)
}

func (r *remote) stats() (conns, maxActive, mails int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns, r.maxActive, r.mails
}

type countingListener struct {
	net.Listener
	r *remote
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.r.mu.Lock()
	l.r.conns++
	l.r.active++
	l.r.maxActive = max(l.r.maxActive, l.r.active)
	l.r.mu.Unlock()
	return &countingConn{Conn: c, r: l.r}, nil
}

type countingConn struct {
	net.Conn
	r    *remote
	once sync.Once
}

func (c *countingConn) Close() error {
	c.once.Do(func() {
		c.r.mu.Lock()
		c.r.active--
		c.r.mu.Unlock()
	})
	return c.Conn.Close()
}

type remoteSession struct {
	r       *remote
	c       *smtp.Conn
	msg     gotMsg
	inTxn   bool
	counted bool // this session holds one of r.txns
}

func (s *remoteSession) Reset() {
	s.msg, s.inTxn = gotMsg{}, false
	s.endTxn()
}

func (s *remoteSession) Logout() error { s.endTxn(); return nil }

func (s *remoteSession) endTxn() {
	if s.counted {
		s.r.mu.Lock()
		s.r.txns--
		s.r.mu.Unlock()
		s.counted = false
	}
}

func (s *remoteSession) Mail(from string, opts *smtp.MailOptions) error {
	s.r.mu.Lock()
	s.r.mails++
	if !s.counted {
		s.counted = true
		s.r.txns++
		s.r.maxTxns = max(s.r.maxTxns, s.r.txns)
	}
	hook, reply := s.r.mailHook, s.r.mailReply
	s.r.mu.Unlock()
	if hook != nil {
		hook()
	}
	if reply != nil {
		return reply
	}
	_, isTLS := s.c.TLSConnectionState()
	s.msg = gotMsg{from: from, tls: isTLS, helo: s.c.Hostname()}
	if opts != nil {
		s.msg.size = opts.Size
	}
	s.inTxn = true
	return nil
}

func (s *remoteSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.r.mu.Lock()
	reply := s.r.rcptReply[to]
	s.r.mu.Unlock()
	if reply != nil {
		return reply
	}
	s.msg.rcpts = append(s.msg.rcpts, to)
	return nil
}

func (s *remoteSession) Data(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if s.r.dataReply != nil {
		return s.r.dataReply
	}
	s.msg.body = string(b)
	s.r.msgs = append(s.r.msgs, s.msg)
	return nil
}

// ---- TLS ----

// ---- DNS ----

func startDNS(t *testing.T, records ...string) (*testdns.Server, *resolver.Resolver) {
	t.Helper()
	d, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, rr := range records {
		if err := d.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	res, err := resolver.New(d.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d, res
}

// ---- local delivery ----

type fakeLocal struct {
	domains map[string]bool
	mu      sync.Mutex
	got     []string
	fail    map[string]error
}

func (f *fakeLocal) IsLocalDomain(d string) bool { return f.domains[d] }

func (f *fakeLocal) DeliverLocal(_ context.Context, rcpt string, _ queue.Meta, body []byte) error {
	if err := f.fail[rcpt]; err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, rcpt+":"+string(body))
	return nil
}

// rcptStatus finds addr in an attempt.
func rcptStatus(t *testing.T, a Attempt, addr string) queue.Rcpt {
	t.Helper()
	for _, r := range a.Rcpts {
		if r.Addr == addr {
			return r
		}
	}
	t.Fatalf("rcpt %s not in attempt %+v", addr, a.Rcpts)
	return queue.Rcpt{}
}

func rcpts(addrs ...string) []queue.Rcpt {
	out := make([]queue.Rcpt, len(addrs))
	for i, a := range addrs {
		out[i] = queue.Rcpt{Addr: a}
	}
	return out
}

const testBody = "From: alice@local.test\r\nTo: bob@dest.test\r\nSubject: quarterly report\r\n\r\nhello\r\n"
