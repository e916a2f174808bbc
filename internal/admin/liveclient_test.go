package admin

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
)

type fixedLive Live

func (f fixedLive) Live() Live { return Live(f) }

// TestClientLive: GET /api/v1/live round-trips through Client.Live, and
// needs the token.
func TestClientLive(t *testing.T) {
	_, ts, cl := testAPI(t)
	t0 := time.Date(2026, 5, 4, 9, 30, 0, 0, time.UTC)
	want := Live{
		Time:     t0,
		Traffic:  []TrafficMinute{{Time: t0, In: 3, Out: 2}},
		TopIPs:   []TopSender{{Key: "10.0.0.5", Trusted: true, MsgsPerMin: 31, RcptsPerMin: 93, LimitMsgs: 30, LimitRcpts: 100, Isolated: true}},
		TopUsers: []TopSender{},
		Guard:    guard.Snapshot{Isolated: []guard.Isolation{{IP: "10.0.0.5", Rule: "rate.msgs_per_minute", Since: t0}}, Suspended: []guard.Suspension{}, Bans: []guard.Ban{}},
		Alerts:   []AlertItem{{Time: t0, Kind: "isolated", Rule: "rate.msgs_per_minute", IP: "10.0.0.5", Detail: "x"}},
		Queue:    QueueCounts{Messages: map[string]int{"held": 3}, Bytes: map[string]int64{"held": 90}},
		Sessions: map[string]int{"smtp": 1},
	}
	// testAPI's server has no live source: give it one.
	s := ts.Config.Handler.(*Server)
	s.SetLive(fixedLive(want))
	got, err := cl.Live()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Live:\n got %+v\nwant %+v", got, want)
	}
	resp, err := http.Get(ts.URL + "/api/v1/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", resp.StatusCode)
	}
}
