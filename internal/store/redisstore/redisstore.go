// Package redisstore is the shared implementation of store.KV: the state
// the nodes of a mamori cluster share (the directory, the guard's
// decisions) kept in one Redis (or Valkey) server, so that a user added or
// a ban made on one node holds on all of them.
//
// Layout: each bucket is one Redis hash, "{PREFIX}:b:BUCKET", field = key.
// The braces are a hash tag: every key of one prefix lives in one Redis
// Cluster slot, so multi-bucket transactions work on Cluster too. Every
// committed write publishes one JSON message on the pub/sub channel
// "{PREFIX}:changes" naming the node that made it and the keys it changed;
// Watch turns those into store.Change values.
//
// Consistency: linearizable per write on a single Redis primary (what
// Redis gives; with Sentinel or Cluster failover, a write acknowledged just
// before a failover can be lost, as with any asynchronous Redis
// replication). Update is an optimistic transaction — WATCH on every
// bucket the callback reads, then MULTI/EXEC of its writes and the change
// message — retried when a watched bucket changed meanwhile: the callback's
// reads and writes are atomic across nodes, at the price of running the
// callback more than once under contention (bucket granularity). Change
// notifications are at most once: pub/sub drops them while a node is
// disconnected, so Watch sends a Resync on every (re)subscription and the
// users of this package also reload periodically. Every operation has a
// deadline (Options.Timeout); an unreachable server gives errors wrapping
// store.ErrUnavailable, never a hang.
//
// URLs: redis://[user:pass@]host:port[/db], rediss:// (TLS);
// redis+sentinel://[user:pass@]host:port[,host:port…]/MASTER[/db] (and
// rediss+sentinel://) for Sentinel; redis+cluster://host:port[,host:port…]
// (and rediss+cluster://) for Cluster. go-redis's own query options (e.g.
// ?dial_timeout=2s) are accepted.
//
// Dependencies: github.com/redis/go-redis/v9, the Redis project's own
// client: maintained with Redis, speaks RESP2/3, Sentinel and Cluster, TLS,
// connection pooling with reconnects, WATCH/MULTI/EXEC and pub/sub with
// automatic resubscription — everything here — and works with Valkey.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mamori-mail/mamori/internal/store"
)

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "mamori"

// DefaultTimeout bounds each operation when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// maxAttempts bounds the retries of an Update that keeps conflicting.
const maxAttempts = 64

// Options configure Open.
type Options struct {
	URL     string        // see the package doc
	Node    string        // this node's name, carried by its changes
	Prefix  string        // key prefix (several clusters on one Redis); default "mamori"
	Timeout time.Duration // per operation; default 2 s
	Log     *slog.Logger
	// Unchecked: Open does not check that Redis answers (a node starting
	// from its local copy during an outage); the client connects when
	// Redis is back.
	Unchecked bool
}

// Store is a store.KV on Redis. It is safe for concurrent use.
type Store struct {
	rdb     redis.UniversalClient
	cluster bool
	node    string
	prefix  string
	channel string
	anchor  string // a key of the prefix's slot, for Cluster's WATCH routing
	timeout time.Duration
	where   string // the URL without credentials, for messages
	log     *slog.Logger
}

var _ store.KV = (*Store)(nil)

// quietClient routes go-redis's own log lines (a line per failed dial
// while Redis is down) to slog's debug level: this package reports an
// outage once, with its context.
var quietClient sync.Once

type debugLogger struct{}

func (debugLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

// Open connects to the Redis server of opt.URL and checks that it answers.
func Open(ctx context.Context, opt Options) (*Store, error) {
	quietClient.Do(func() { redis.SetLogger(debugLogger{}) })
	rdb, cluster, err := newClient(opt.URL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	s := &Store{
		rdb:     rdb,
		cluster: cluster,
		node:    opt.Node,
		prefix:  cmpOr(opt.Prefix, DefaultPrefix),
		timeout: opt.Timeout,
		where:   Redact(opt.URL),
		log:     opt.Log,
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.channel = "{" + s.prefix + "}:changes"
	s.anchor = "{" + s.prefix + "}:anchor"
	if opt.Unchecked {
		return s, nil
	}
	if err := s.Ping(ctx); err != nil {
		rdb.Close()
		return nil, err
	}
	return s, nil
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Close closes the connections.
func (s *Store) Close() error {
	if err := s.rdb.Close(); err != nil {
		return fmt.Errorf("redisstore: close: %w", err)
	}
	return nil
}

// Where is the store's URL without credentials, for messages.
func (s *Store) Where() string { return s.where }

// Node is the name this store's changes carry.
func (s *Store) Node() string { return s.node }

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

func (s *Store) key(bucket string) string { return "{" + s.prefix + "}:b:" + bucket }

// fail wraps a Redis error with context; a failure to reach the server
// (anything but an error reply), and the replies of a server that cannot
// serve yet (loading its data, a failover or a resharding under way),
// also wrap store.ErrUnavailable.
func (s *Store) fail(op string, err error) error {
	var reply redis.Error
	if errors.As(err, &reply) && !errors.Is(err, redis.TxFailedErr) && !notReady(err) {
		return fmt.Errorf("redisstore: %s on %s: %w", op, s.where, err)
	}
	return fmt.Errorf("redisstore: %s on %s: %w: %w", op, s.where, store.ErrUnavailable, err)
}

// notReady reports an error reply that means "not now" rather than "no".
func notReady(err error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "BUSY "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// Get returns the value under key in bucket, or nil, nil.
func (s *Store) Get(bucket, key string) ([]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	v, err := s.rdb.HGet(ctx, s.key(bucket), key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, s.fail("get "+bucket+"/"+key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Put stores val under key in bucket and announces the change.
func (s *Store) Put(bucket, key string, val []byte) error {
	return s.Update(func(tx store.Tx) error { return tx.Put(bucket, key, val) })
}

// Delete removes key from bucket and announces the change.
func (s *Store) Delete(bucket, key string) error {
	return s.Update(func(tx store.Tx) error { return tx.Delete(bucket, key) })
}

// ForEach calls fn for every key of bucket in ascending byte order. The
// bucket is read whole (HGETALL: one consistent view); buckets are the
// directory's and the guard's decisions, thousands of entries, not
// millions.
func (s *Store) ForEach(bucket string, fn func(key string, val []byte) error) error {
	ctx, cancel := s.ctx()
	m, err := s.rdb.HGetAll(ctx, s.key(bucket)).Result()
	cancel()
	if err != nil {
		return s.fail("read "+bucket, err)
	}
	return forEachSorted(m, nil, fn)
}

// forEachSorted calls fn over m with the pending writes of a transaction
// laid over it, keys in ascending order.
func forEachSorted(m map[string]string, over map[string]*op, fn func(string, []byte) error) error {
	keys := slices.Collect(maps.Keys(m))
	for k, o := range over {
		if _, ok := m[k]; !ok && !o.del {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		var v []byte
		if o, ok := over[k]; ok {
			if o.del {
				continue
			}
			v = slices.Clone(o.val)
		} else {
			v = []byte(m[k])
		}
		if v == nil {
			v = []byte{}
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// op is one pending write of a transaction.
type op struct {
	bucket, key string
	val         []byte
	del         bool
}

// message is what a committed write publishes.
type message struct {
	Node    string       `json:"n"`
	Changes []msgChanged `json:"c"`
}

type msgChanged struct {
	Bucket  string `json:"b"`
	Key     string `json:"k"`
	Deleted bool   `json:"d,omitempty"`
}

// userError carries the callback's own error through go-redis's Watch.
type userError struct{ err error }

func (e userError) Error() string { return e.err.Error() }

// Update runs fn as an optimistic transaction; see the package doc. fn
// may run more than once.
func (s *Store) Update(fn func(tx store.Tx) error) error {
	ctx, cancel := s.ctx()
	defer cancel()
	var anchor []string
	if s.cluster {
		anchor = []string{s.anchor}
	}
	for attempt := 1; ; attempt++ {
		err := s.rdb.Watch(ctx, func(rtx *redis.Tx) error {
			tx := &redisTx{s: s, ctx: ctx, rtx: rtx, watched: map[string]bool{}, over: map[string]map[string]*op{}}
			if err := fn(tx); err != nil {
				return userError{err}
			}
			if len(tx.ops) == 0 {
				return nil
			}
			msg := message{Node: s.node}
			for _, o := range tx.ops {
				msg.Changes = append(msg.Changes, msgChanged{Bucket: o.bucket, Key: o.key, Deleted: o.del})
			}
			payload, err := json.Marshal(msg)
			if err != nil {
				return userError{fmt.Errorf("encode change message: %w", err)}
			}
			_, err = rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, o := range tx.ops {
					if o.del {
						p.HDel(ctx, s.key(o.bucket), o.key)
					} else {
						p.HSet(ctx, s.key(o.bucket), o.key, o.val)
					}
				}
				p.Publish(ctx, s.channel, payload)
				return nil
			})
			return err
		}, anchor...)
		var ue userError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ue):
			return fmt.Errorf("redisstore: update: %w", ue.err)
		case errors.Is(err, redis.TxFailedErr) && attempt < maxAttempts:
			// A watched bucket changed: run fn again on fresh data, after
			// a short random pause so that contenders spread out.
			t := time.NewTimer(time.Duration(rand.IntN(1000*min(attempt, 10))) * time.Microsecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return s.fail("update", ctx.Err())
			case <-t.C:
			}
		default:
			return s.fail("update", err)
		}
	}
}

// redisTx is the store.Tx of one attempt of Update: reads WATCH their
// bucket, then read through the pending writes; writes are buffered until
// EXEC.
type redisTx struct {
	s       *Store
	ctx     context.Context
	rtx     *redis.Tx
	watched map[string]bool
	ops     []*op
	over    map[string]map[string]*op // bucket → key → latest pending write
}

func (tx *redisTx) watch(bucket string) error {
	if tx.watched[bucket] {
		return nil
	}
	if err := tx.rtx.Watch(tx.ctx, tx.s.key(bucket)).Err(); err != nil {
		return tx.s.fail("watch "+bucket, err)
	}
	tx.watched[bucket] = true
	return nil
}

func (tx *redisTx) Get(bucket, key string) ([]byte, error) {
	if o, ok := tx.over[bucket][key]; ok {
		if o.del {
			return nil, nil
		}
		return append([]byte{}, o.val...), nil
	}
	if err := tx.watch(bucket); err != nil {
		return nil, err
	}
	v, err := tx.rtx.HGet(tx.ctx, tx.s.key(bucket), key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, tx.s.fail("get "+bucket+"/"+key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (tx *redisTx) add(o *op) {
	tx.ops = append(tx.ops, o)
	if tx.over[o.bucket] == nil {
		tx.over[o.bucket] = map[string]*op{}
	}
	tx.over[o.bucket][o.key] = o
}

func (tx *redisTx) Put(bucket, key string, val []byte) error {
	tx.add(&op{bucket: bucket, key: key, val: append([]byte{}, val...)})
	return nil
}

func (tx *redisTx) Delete(bucket, key string) error {
	tx.add(&op{bucket: bucket, key: key, del: true})
	return nil
}

func (tx *redisTx) ForEach(bucket string, fn func(key string, val []byte) error) error {
	if err := tx.watch(bucket); err != nil {
		return err
	}
	m, err := tx.rtx.HGetAll(tx.ctx, tx.s.key(bucket)).Result()
	if err != nil {
		return tx.s.fail("read "+bucket, err)
	}
	return forEachSorted(m, tx.over[bucket], fn)
}

// watchBuffer is how many changes a receiver may fall behind before the
// subscription stops reading (Redis then buffers, and past its pub/sub
// output limit disconnects; the reconnect brings a Resync).
const watchBuffer = 256

// receiveWait is how long Watch waits for a message before it checks the
// connection with a PING.
const receiveWait = time.Second

// maxResubscribeWait caps the pause between attempts to subscribe again
// while Redis is unreachable. Changes must reach every node within a second,
// also the first ones after Redis returns, so the cap stays well below that;
// one dial every half second per node costs Redis nothing.
const maxResubscribeWait = 500 * time.Millisecond

// Watch reports the changes of every node to the given buckets (all when
// none is named) until ctx ends. Each (re)subscription — the first one,
// and every reconnect after Redis was unreachable — first sends a Change
// with Resync set: changes made meanwhile were not seen.
func (s *Store) Watch(ctx context.Context, buckets ...string) <-chan Change {
	ch := make(chan store.Change, watchBuffer)
	go s.watch(ctx, slices.Clone(buckets), ch)
	return ch
}

// Change is store.Change (named here for Watch's signature readability).
type Change = store.Change

func (s *Store) watch(ctx context.Context, buckets []string, ch chan<- store.Change) {
	defer close(ch)
	send := func(c store.Change) bool {
		select {
		case ch <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	backoff := 100 * time.Millisecond
	down := false
	for ctx.Err() == nil {
		ps := s.rdb.Subscribe(ctx, s.channel)
		err := s.receive(ctx, ps, buckets, send, &down, &backoff)
		ps.Close()
		if ctx.Err() != nil {
			return
		}
		if !down {
			s.log.Warn("shared store: change notifications interrupted; retrying", "redis", s.where, "err", err.Error())
			down = true
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxResubscribeWait)
	}
}

// receive reads one subscription until it fails or ctx ends.
func (s *Store) receive(ctx context.Context, ps *redis.PubSub, buckets []string, send func(store.Change) bool, down *bool, backoff *time.Duration) error {
	pinged := false
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, receiveWait)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Quiet: make sure the connection is alive; the PONG (or
				// an error) arrives by the next receive.
				pinged = true
				if err := ps.Ping(ctx); err != nil {
					return err
				}
				continue
			}
			return err
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if *down {
				s.log.Info("shared store: change notifications back", "redis", s.where)
				*down = false
			}
			*backoff = 100 * time.Millisecond
			if !send(store.Change{Resync: true}) {
				return ctx.Err()
			}
		case *redis.Message:
			var mm message
			if err := json.Unmarshal([]byte(m.Payload), &mm); err != nil {
				s.log.Warn("shared store: bad change message", "err", err.Error())
				continue
			}
			for _, c := range mm.Changes {
				if len(buckets) > 0 && !slices.Contains(buckets, c.Bucket) {
					continue
				}
				if !send(store.Change{Bucket: c.Bucket, Key: c.Key, Node: mm.Node, Deleted: c.Deleted}) {
					return ctx.Err()
				}
			}
		}
	}
	return ctx.Err()
}

// newClient builds the client a URL asks for; cluster reports a Redis
// Cluster client.
func newClient(raw string) (rdb redis.UniversalClient, cluster bool, err error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, false, fmt.Errorf("store url %q: want redis://, rediss://, redis+sentinel:// or redis+cluster://", Redact(raw))
	}
	base, kind, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, false, fmt.Errorf("store url %s: unknown scheme %q", Redact(raw), scheme)
	}
	switch kind {
	case "":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, false, fmt.Errorf("store url %s: %s", Redact(raw), parseProblem(err))
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.ContextTimeoutEnabled)
		return redis.NewClient(o), false, nil
	case "sentinel":
		u, err := multiHost(base, rest, true)
		if err != nil {
			return nil, false, fmt.Errorf("store url %s: %s", Redact(raw), parseProblem(err))
		}
		o, err := redis.ParseFailoverURL(u)
		if err != nil {
			return nil, false, fmt.Errorf("store url %s: %s", Redact(raw), parseProblem(err))
		}
		if o.Password == "" { // one password for Sentinel and Redis, the usual setup
			o.Username, o.Password = o.SentinelUsername, o.SentinelPassword
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.ContextTimeoutEnabled)
		return redis.NewFailoverClient(o), false, nil
	case "cluster":
		u, err := multiHost(base, rest, false)
		if err != nil {
			return nil, false, fmt.Errorf("store url %s: %s", Redact(raw), parseProblem(err))
		}
		o, err := redis.ParseClusterURL(u)
		if err != nil {
			return nil, false, fmt.Errorf("store url %s: %s", Redact(raw), parseProblem(err))
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.ContextTimeoutEnabled)
		return redis.NewClusterClient(o), true, nil
	}
	return nil, false, fmt.Errorf("store url %s: unknown scheme %q", Redact(raw), scheme)
}

// tune sets short timeouts (a node must notice an unreachable store in
// about a second and go on from its cache) unless the URL set them.
func tune(dial, read, write *time.Duration, retries *int, ctxTimeout *bool) {
	for _, d := range []*time.Duration{dial, read, write} {
		if *d == 0 {
			*d = time.Second
		}
	}
	if *retries == 0 {
		*retries = 1
	}
	*ctxTimeout = true
}

// multiHost turns "[userinfo@]h1:p1,h2:p2[/path][?query]" into the URL
// form go-redis parses: the first host in the authority, the others as
// addr= parameters; for Sentinel the first path element is the master's
// name (master_name=) and the second the database.
func multiHost(base, rest string, sentinel bool) (string, error) {
	authority, tail, _ := strings.Cut(rest, "/")
	path, query, _ := strings.Cut(tail, "?")
	if i := strings.IndexByte(authority, '?'); i >= 0 { // no path, a query
		authority, path, query = authority[:i], "", authority[i+1:]
	}
	userinfo, hosts, ok := strings.Cut(authority, "@")
	if !ok {
		userinfo, hosts = "", authority
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", err
	}
	list := strings.Split(hosts, ",")
	if list[0] == "" {
		return "", errors.New("no host")
	}
	for _, h := range list[1:] {
		if h == "" {
			return "", errors.New("empty host in the list")
		}
		q.Add("addr", h)
	}
	db := ""
	if sentinel {
		master, dbPart, _ := strings.Cut(path, "/")
		if master == "" {
			return "", errors.New("sentinel: the master's name is missing (redis+sentinel://HOST:PORT/MASTER)")
		}
		q.Set("master_name", master)
		db = dbPart
	} else {
		db = path
	}
	u := base + "://"
	if userinfo != "" {
		u += userinfo + "@"
	}
	u += list[0]
	if db != "" {
		u += "/" + db
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u, nil
}

// Redact returns raw with any password replaced, for logs and errors.
// The user information ends at the last '@' before the host, so a
// password holding '/', '@' or ':' is masked whole.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(unparsable url)"
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		userinfo, host := rest[:at], rest[at:]
		if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
			return scheme + "://" + user + ":xxxxx" + host
		}
	}
	return raw
}

// parseProblem is a URL parser's complaint without the URL it quotes
// (which may hold a password).
func parseProblem(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " URL: " + ue.Err.Error()
	}
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		return "invalid URL"
	}
	return msg
}
