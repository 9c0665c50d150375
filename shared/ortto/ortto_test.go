package ortto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/simkit"
)

const testKey = "ORTTO-KEY-123"

func newSim(t *testing.T, opts sim.Options) (*sim.Server, *httptest.Server) {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	s := sim.New(opts)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func newClient(t *testing.T, srv *httptest.Server, key string) *Client {
	t.Helper()
	c, err := New(Options{BaseURL: srv.URL + "/v1", APIKey: key, RequestsPerSecond: 1000,
		sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func contacts(n int) []dest.Contact {
	cs := make([]dest.Contact, n)
	for i := range cs {
		cs[i] = dest.Contact{Email: fmt.Sprintf("user%03d@example.com", i), FirstName: "F", LastName: "L",
			Custom: []dest.Value{{Key: "str:cm:tier", Type: dest.String, Value: "gold"}, {Key: "int:cm:orders", Type: dest.Integer, Value: json.Number(fmt.Sprint(i))}}}
	}
	return cs
}

// TestNeverSendsSubscription: no field of a merge is bol::p or bol::sp,
// whatever a contact carries; one carrying them is refused, not sent.
func TestNeverSendsSubscription(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sent []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body merge
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Error(err)
		}
		var people []map[string]any
		for _, p := range body.People {
			mu.Lock()
			sent = append(sent, p.Fields)
			mu.Unlock()
			people = append(people, map[string]any{"status": "created"})
		}
		json.NewEncoder(w).Encode(map[string]any{"people": people})
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv, testKey)
	cs := contacts(3)
	cs[1].Custom = append(cs[1].Custom, dest.Value{Key: "bol::p", Type: dest.Boolean, Value: true})
	cs[2].Custom = append(cs[2].Custom, dest.Value{Key: "bol::sp", Type: dest.Boolean, Value: true})
	outs, err := c.Upsert(context.Background(), "VIP", cs, dest.WriteAny)
	if err != nil {
		t.Fatal(err)
	}
	if outs[0].Status != dest.Sent || outs[1].Status != dest.Rejected || outs[2].Status != dest.Rejected {
		t.Fatalf("outcomes %+v", outs)
	}
	for _, f := range sent {
		for k := range f {
			if k == "bol::p" || k == "bol::sp" {
				t.Fatalf("sent %s: %v", k, f)
			}
		}
	}
	if len(sent) != 1 {
		t.Fatalf("%d people sent, want 1", len(sent))
	}
}

func TestWireValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v    dest.Value
		want any
		why  string
	}{
		{dest.Value{Key: "int:cm:spend", Type: dest.Decimal, Value: json.Number("12.5")}, int64(12500), ""},
		{dest.Value{Key: "int:cm:spend", Type: dest.Decimal, Value: json.Number("0.1")}, int64(100), ""},
		{dest.Value{Key: "int:cm:spend", Type: dest.Decimal, Value: json.Number("-2.0005")}, int64(-2001), ""},
		{dest.Value{Key: "int:cm:spend", Type: dest.Decimal, Value: 19.99}, int64(19990), ""},
		{dest.Value{Key: "int:cm:spend", Type: dest.Decimal, Value: json.Number("1e30")}, nil, "beyond"},
		{dest.Value{Key: "int:cm:orders", Type: dest.Integer, Value: json.Number("9007199254740991")}, int64(9007199254740991), ""},
		{dest.Value{Key: "bol:cm:vip", Type: dest.Boolean, Value: false}, false, ""},
		{dest.Value{Key: "dtz:cm:joined", Type: dest.Date, Value: "2024-02-29"}, dtz{2024, 2, 29, "UTC"}, ""},
		{dest.Value{Key: "dtz:cm:joined", Type: dest.Date, Value: "2024-03-01T01:00:00+02:00"}, dtz{2024, 2, 29, "UTC"}, ""},
		{dest.Value{Key: "str:cm:tier", Type: dest.String, Value: strings.Repeat("é", 256)}, nil, "at most 255"},
		{dest.Value{Key: "txt:cm:notes", Type: dest.String, Value: strings.Repeat("é", 256)}, strings.Repeat("é", 256), ""},
		{dest.Value{Key: "str:cm:tier", Type: dest.String, Value: "  "}, nil, ""},
	}
	for _, tt := range tests {
		got, why := wireValue(tt.v)
		if got != tt.want || !strings.Contains(why, tt.why) || (tt.why == "" && why != "") {
			t.Errorf("wireValue(%+v) = %v, %q; want %v, %q", tt.v, got, why, tt.want, tt.why)
		}
	}
}

func TestFieldType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key     string
		decimal bool
		want    dest.Type
		err     string
	}{
		{"str:cm:loyalty-tier", false, dest.String, ""},
		{"int:cm:orders", false, dest.Integer, ""},
		{"int:cm:spend", true, dest.Decimal, ""},
		{"dtz:cm:joined", false, dest.Date, ""},
		{"str:cm:tier", true, "", "the only kind decimal: true may mark"},
		{"string--Loyalty--Tier", false, "", `did you mean "str:cm:loyalty-tier"?`},
		{"float--Spend", false, "", "{field: int:cm:spend, decimal: true}"},
		{"string:cm:Loyalty Tier", false, "", `did you mean "str:cm:loyalty-tier"?`},
		{"bol::p", false, "", "never sent"},
		{"str::first", false, "", "match.firstName"},
	}
	for _, tt := range tests {
		got, err := fieldType(tt.key, tt.decimal)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("fieldType(%q, %v) = %q, %v; want %q, %q", tt.key, tt.decimal, got, err, tt.want, tt.err)
		}
	}
}

func TestUpsertAndRemoveAgainstSimulator(t *testing.T) {
	t.Parallel()
	f, err := simkit.ParseFaults(`reject=^user007@`)
	if err != nil {
		t.Fatal(err)
	}
	s, srv := newSim(t, sim.Options{Faults: f})
	for _, fd := range [][2]string{{"Tier", "text"}, {"Orders", "integer"}} {
		if _, err := s.CreateField(fd[0], fd[1]); err != nil {
			t.Fatal(err)
		}
	}
	s.Suppress("user011@example.com")
	c := newClient(t, srv, testKey)
	tag, err := c.PrepareList(context.Background(), dest.ListSpec{Title: "VIP", Fields: []dest.Field{{Key: "str:cm:tier", Type: dest.String}, {Key: "int:cm:orders", Type: dest.Integer}}})
	if err != nil || tag != "VIP" {
		t.Fatalf("PrepareList = %q, %v", tag, err)
	}
	outs, err := c.Upsert(context.Background(), tag, contacts(250), dest.WriteAny)
	if err != nil {
		t.Fatal(err)
	}
	var rejected []string
	for _, o := range outs {
		if o.Status != dest.Sent {
			rejected = append(rejected, o.Email+": "+o.Reason)
		}
	}
	if len(rejected) != 2 || !strings.Contains(rejected[0], "user007") || !strings.Contains(rejected[1], "suppressed") {
		t.Fatalf("not sent: %v", rejected)
	}
	st := s.Dump()
	if len(st.People) != 248 || len(st.Tagged("VIP")) != 248 || st.People[3].Fields["int:cm:orders"] != int64(3) {
		t.Fatalf("Ortto holds %d people, %d tagged; %+v", len(st.People), len(st.Tagged("VIP")), st.People[3])
	}
	if n := s.Counters().ByRoute["POST /person/merge"][200]; n != 3 {
		t.Errorf("%d merges for 250 contacts, want 3", n)
	}

	s.ResetCounters()
	var leaving []string
	for i := range 150 {
		leaving = append(leaving, fmt.Sprintf("user%03d@example.com", i))
	}
	leaving = append(leaving, "never-seen@example.com")
	outs, err = c.Remove(context.Background(), tag, leaving)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outs {
		if o.Status != dest.Sent {
			t.Errorf("removal %+v", o)
		}
	}
	st = s.Dump()
	if len(st.Tagged("VIP")) != 248-148 || len(st.People) != 248 { // user007 and user011 were never created
		t.Fatalf("after removals: %d tagged, %d people", len(st.Tagged("VIP")), len(st.People))
	}
	if c := s.Counters(); c.ByRoute["POST /person/merge"][200] != 2 || c.Total != 2 {
		t.Errorf("151 removals took %v; want 2 merges (100 a call)", c.ByRoute)
	}
}

func TestPrepareListChecksFields(t *testing.T) {
	t.Parallel()
	s, srv := newSim(t, sim.Options{})
	for _, fd := range [][2]string{{"Orders", "integer"}, {"Spend", "decimal"}} {
		if _, err := s.CreateField(fd[0], fd[1]); err != nil {
			t.Fatal(err)
		}
	}
	c := newClient(t, srv, testKey)
	spec := dest.ListSpec{Title: "VIP", Fields: []dest.Field{
		{Key: "int:cm:orders", Type: dest.Decimal}, {Key: "int:cm:spend", Type: dest.Integer}, {Key: "str:cm:tier", Type: dest.String},
	}}
	_, err := c.PrepareList(context.Background(), spec)
	var ce *dest.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a ConfigError", err)
	}
	for _, want := range []string{"int:cm:orders holds whole numbers", "int:cm:spend holds decimals", "{field: int:cm:spend, decimal: true}", "str:cm:tier does not exist", "createFields: true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	spec.CreateFields = true
	spec.Fields = []dest.Field{{Key: "str:cm:loyalty-tier", Type: dest.String}, {Key: "int:cm:lifetime-spend", Type: dest.Decimal}, {Key: "dtz:cm:joined", Type: dest.Date}}
	if _, err := c.PrepareList(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range s.Dump().Fields {
		got = append(got, f.ID+"="+f.DisplayType)
	}
	if want := "dtz:cm:joined=date,int:cm:lifetime-spend=decimal,int:cm:orders=integer,int:cm:spend=decimal,str:cm:loyalty-tier=text"; strings.Join(got, ",") != want {
		t.Errorf("fields %v, want %s", got, want)
	}
}

// TestWrongRegionKeyStopsEverything: a key of another region is refused
// like a wrong key, and nothing is sent after it.
func TestWrongRegionKeyStopsEverything(t *testing.T) {
	t.Parallel()
	s, srv := newSim(t, sim.Options{Region: "global", OtherRegions: map[string]string{"EU-KEY": "eu"}})
	c := newClient(t, srv, "EU-KEY")
	_, err := c.PrepareList(context.Background(), dest.ListSpec{Title: "VIP"})
	var ue *dest.UnauthorizedError
	if !errors.As(err, &ue) || ue.Status != 401 || !strings.Contains(err.Error(), "eu region") {
		t.Fatalf("err = %v", err)
	}
	outs, err := c.Upsert(context.Background(), "VIP", contacts(5), dest.WriteAny)
	if !errors.As(err, &ue) || outs[0].Status != dest.Failed {
		t.Fatalf("after the refusal: %v %+v", err, outs)
	}
	if n := s.Counters().Total; n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// TestThrottledHonoursBodyHint: Ortto's 429 carries its wait in the body;
// the client waits that long, not its own backoff.
func TestThrottledHonoursBodyHint(t *testing.T) {
	t.Parallel()
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"code":"rate-limit","message":"rate limit","try-in-seconds":10}}`)
			return
		}
		fmt.Fprint(w, `{"fields":[]}`)
	}))
	t.Cleanup(srv.Close)
	var waits []time.Duration
	c, err := New(Options{BaseURL: srv.URL + "/v1", APIKey: testKey, RequestsPerSecond: 1000,
		sleep: func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PrepareList(context.Background(), dest.ListSpec{Title: "VIP"}); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 1 || waits[0] != 10*time.Second || c.Stats().Throttled != 1 {
		t.Fatalf("waits %v, stats %+v", waits, c.Stats())
	}
}

// TestPacingAcrossGoroutines: goroutines sharing a Client share its budget:
// the requests take the time the budget gives them, and a simulator
// enforcing it answers none 429.
func TestPacingAcrossGoroutines(t *testing.T) {
	t.Parallel()
	const rps, goroutines, callsEach = 20, 8, 8 // 64 merges: about 3 s
	s, srv := newSim(t, sim.Options{RequestsPerSecond: rps, Burst: rps})
	for _, fd := range [][2]string{{"Tier", "text"}, {"Orders", "integer"}} {
		if _, err := s.CreateField(fd[0], fd[1]); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(Options{BaseURL: srv.URL + "/v1", APIKey: testKey, RequestsPerSecond: rps, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			cs := contacts(10 * callsEach)
			for i := range cs {
				cs[i].Email = fmt.Sprintf("g%d-%s", g, cs[i].Email)
			}
			for i := 0; i < len(cs); i += 10 {
				outs, err := c.Upsert(context.Background(), "VIP", cs[i:i+10], dest.WriteAny)
				if err != nil || outs[0].Status != dest.Sent {
					t.Errorf("goroutine %d: %+v %v", g, outs[0], err)
				}
			}
		})
	}
	wg.Wait()
	cnt := s.Counters()
	if cnt.Total != goroutines*callsEach || cnt.ByStatus[429] != 0 {
		t.Errorf("simulator saw %d requests, %d answered 429; want %d, none", cnt.Total, cnt.ByStatus[429], goroutines*callsEach)
	}
	// As the simulator saw them, the requests took what they take at rps
	// after the one at once (a tenth off for transit); a limiter per
	// goroutine would send them in a third of a second. Not requests per
	// second as counted: a waiter woken late still takes its slot, so a
	// loaded machine bunches a few, which the budget's bucket takes.
	if want := time.Duration(float64(cnt.Total-1) / rps * float64(time.Second)); cnt.Span < want*9/10 {
		t.Errorf("%d requests at %d/s took %v; want about %v: pacing is not shared", cnt.Total, rps, cnt.Span, want)
	}
}
