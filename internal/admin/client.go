package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Client talks to a running server's admin API. It implements Manager.
type Client struct {
	Base  string // "http://127.0.0.1:8025"
	Token string
	HTTP  *http.Client
}

// NewClient returns a client for the admin listener address "host:port".
func NewClient(addr, token string) *Client {
	return &Client{
		Base:  "http://" + addr,
		Token: token,
		HTTP:  &http.Client{Timeout: 5 * time.Minute},
	}
}

// ErrUnreachable means no server answered at the admin address.
var ErrUnreachable = errors.New("admin API unreachable")

// APIError is a non-2xx answer from the API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Ping reports whether a server answers at the admin address.
func (c *Client) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
		return err
	}
	resp.Body.Close()
	return nil
}

func (c *Client) do(method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := c.Base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Status: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) Users() ([]mailbox.User, error) {
	var v []mailbox.User
	return v, c.do("GET", "/api/v1/users", nil, nil, &v)
}
func (c *Client) AddUser(addr, pw string) error {
	return c.do("POST", "/api/v1/users", nil, map[string]string{"address": addr, "password": pw}, nil)
}
func (c *Client) DelUser(addr string) error {
	return c.do("DELETE", "/api/v1/users/"+url.PathEscape(addr), nil, nil, nil)
}
func (c *Client) SetPassword(addr, pw string) error {
	return c.do("PUT", "/api/v1/users/"+url.PathEscape(addr)+"/password", nil, map[string]string{"password": pw}, nil)
}
func (c *Client) SetQuota(addr string, quota int64) error {
	return c.do("PUT", "/api/v1/users/"+url.PathEscape(addr)+"/quota", nil, map[string]int64{"quota": quota}, nil)
}
func (c *Client) SetDisabled(addr string, disabled bool) error {
	return c.do("PUT", "/api/v1/users/"+url.PathEscape(addr)+"/disabled", nil, map[string]bool{"disabled": disabled}, nil)
}
func (c *Client) Domains() ([]string, error) {
	var v []string
	return v, c.do("GET", "/api/v1/domains", nil, nil, &v)
}
func (c *Client) AddDomain(d string) error {
	return c.do("POST", "/api/v1/domains", nil, map[string]string{"domain": d}, nil)
}
func (c *Client) DelDomain(d string) error {
	return c.do("DELETE", "/api/v1/domains/"+url.PathEscape(d), nil, nil, nil)
}
func (c *Client) Aliases() ([]mailbox.Alias, error) {
	var v []mailbox.Alias
	return v, c.do("GET", "/api/v1/aliases", nil, nil, &v)
}
func (c *Client) AddAlias(a string, targets []string) error {
	return c.do("POST", "/api/v1/aliases", nil, map[string]any{"alias": a, "targets": targets}, nil)
}
func (c *Client) DelAlias(a string) error {
	return c.do("DELETE", "/api/v1/aliases/"+url.PathEscape(a), nil, nil, nil)
}

// QueueList returns the messages matching f.
func (c *Client) QueueList(f queue.Filter) ([]QueueItem, error) {
	var v []QueueItem
	return v, c.do("GET", "/api/v1/queue", FilterQuery(f), nil, &v)
}

// QueueCount returns how many messages match f.
func (c *Client) QueueCount(f queue.Filter) (int, error) {
	q := FilterQuery(f)
	q.Set("count", "1")
	var v struct{ Count int }
	return v.Count, c.do("GET", "/api/v1/queue", q, nil, &v)
}

// QueueShow returns one message's metadata.
func (c *Client) QueueShow(id string) (QueueItem, error) {
	var v QueueItem
	return v, c.do("GET", "/api/v1/queue/"+url.PathEscape(id), nil, nil, &v)
}

// QueueBody copies one message's raw content to w.
func (c *Client) QueueBody(id string, w io.Writer) error {
	return c.do("GET", "/api/v1/queue/"+url.PathEscape(id), url.Values{"body": {"1"}}, nil, w)
}

// QueueOp runs hold, release, delete or retry on the messages matching f.
// An empty filter is refused (by the server too); use QueueOpAll to act on
// the whole queue on purpose.
func (c *Client) QueueOp(op string, f queue.Filter, reason string) (int, error) {
	return c.queueOp(op, f, reason, false)
}

// QueueOpAll is QueueOp that may act on every message when f is empty
// (the CLI's --all; the API's all=true).
func (c *Client) QueueOpAll(op string, f queue.Filter, reason string) (int, error) {
	return c.queueOp(op, f, reason, true)
}

func (c *Client) queueOp(op string, f queue.Filter, reason string, all bool) (int, error) {
	if f.IsEmpty() && !all {
		return 0, fmt.Errorf("queue %s: give a filter or IDs, or --all for the whole queue", op)
	}
	q := FilterQuery(f)
	if all {
		q.Set("all", "true")
	}
	if reason != "" {
		q.Set("reason", reason)
	}
	var v struct{ Count int }
	return v.Count, c.do("POST", "/api/v1/queue/"+op, q, nil, &v)
}

// GuardSnapshot lists isolated senders, suspended accounts and bans.
func (c *Client) GuardSnapshot() (guard.Snapshot, error) {
	var v guard.Snapshot
	return v, c.do("GET", "/api/v1/guard", nil, nil, &v)
}

// GuardBan bans an IP or CIDR; dur "" means the guard's backoff length.
func (c *Client) GuardBan(cidr, dur string) error {
	return c.do("POST", "/api/v1/guard/ban", nil, map[string]string{"cidr": cidr, "for": dur}, nil)
}

// GuardUnban lifts a ban.
func (c *Client) GuardUnban(cidr string) error {
	return c.do("POST", "/api/v1/guard/unban", nil, map[string]string{"cidr": cidr}, nil)
}

// GuardRelease ends the isolation of an IP or the isolation/suspension of a
// user; with releaseMail its held mail is released too. It returns how many
// messages were released.
func (c *Client) GuardRelease(target string, releaseMail bool) (int, error) {
	var v struct {
		Released int `json:"released_messages"`
	}
	err := c.do("POST", "/api/v1/guard/release", nil, map[string]any{"target": target, "release_mail": releaseMail}, &v)
	return v.Released, err
}

// GuardNft writes the bans as an nftables ruleset.
func (c *Client) GuardNft(w io.Writer) error {
	return c.do("GET", "/api/v1/guard/nft", nil, nil, w)
}

// Live returns the live view (GET /api/v1/live).
func (c *Client) Live() (Live, error) {
	var v Live
	return v, c.do("GET", "/api/v1/live", nil, nil, &v)
}
