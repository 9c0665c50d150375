package autopilot_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/claims"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/store"
)

// faultProxy is a reverse proxy in front of a simulator that spoils chosen
// requests: per route ("POST /list"), the n-th request (from 1) is either
// forwarded and its answer replaced (applied, answered badly) or answered
// without being forwarded.
type faultProxy struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	seen  map[string]int
	rules map[string]map[int]spoil
}

type spoil struct {
	status  int
	forward bool // the simulator applies the request; the client gets status anyway
}

func newFaultProxy(t *testing.T, s http.Handler, rules map[string]map[int]spoil) *httptest.Server {
	t.Helper()
	backend := httptest.NewServer(s)
	t.Cleanup(backend.Close)
	u, err := url.Parse(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{proxy: httputil.NewSingleHostReverseProxy(u), seen: map[string]int{}, rules: rules}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + strings.TrimPrefix(r.URL.Path, "/v1")
	p.mu.Lock()
	p.seen[route]++
	rule, spoilt := p.rules[route][p.seen[route]]
	p.mu.Unlock()
	switch {
	case !spoilt:
		p.proxy.ServeHTTP(w, r)
	case rule.forward:
		p.proxy.ServeHTTP(httptest.NewRecorder(), r)
		http.Error(w, `{"error":"Bad Gateway","message":"spoilt by the test proxy"}`, rule.status)
	default:
		http.Error(w, `{"error":"Service Unavailable","message":"spoilt by the test proxy"}`, rule.status)
	}
}

// titled returns the ids of the simulator's lists titled title.
func titled(s *sim.Server, title string) []string {
	var ids []string
	for _, l := range s.Dump().Lists {
		if l.Title == title {
			ids = append(ids, l.ID)
		}
	}
	return ids
}

// TestPrepareListAmbiguousCreateThenFailedCheck is issue 20's scripted
// proxy: the first POST /list is applied but answered 502, and the check
// that follows meets a 503 on its GET /lists. The check must retry its own
// GET, find the list and end the call: one list, and its id returned.
func TestPrepareListAmbiguousCreateThenFailedCheck(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Options{APIKey: simKey})
	proxy := newFaultProxy(t, s, map[string]map[int]spoil{
		"POST /list": {1: {status: http.StatusBadGateway, forward: true}},
		"GET /lists": {2: {status: http.StatusServiceUnavailable}},
	})
	c, err := autopilot.New(autopilot.Options{BaseURL: proxy.URL + "/v1", APIKey: simKey, RequestsPerSecond: 1000, Burst: 10,
		BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.PrepareList(context.Background(), dest.ListSpec{Title: "VIP"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := titled(s, "VIP"); len(ids) != 1 || ids[0] != id {
		t.Errorf("simulator holds lists %v titled VIP; PrepareList returned %q", ids, id)
	}
}

// TestErrorsUnderServerErrorsNameEachCauseOnce runs PrepareList, Upsert
// and Remove against a simulator answering 60 % of requests with a 5xx.
// Every error and failure reason must stay short and repeat no layer: a
// retry check that re-entered itself once made errors ~90 levels deep.
func TestErrorsUnderServerErrorsNameEachCauseOnce(t *testing.T) {
	t.Parallel()
	var messages []string
	for seed := range int64(20) {
		s := sim.New(sim.Options{APIKey: simKey, Faults: sim.Faults{ServerErrorRate: 0.6}, Seed: seed})
		c, _ := simClient(t, s, autopilot.Options{RequestsPerSecond: 1000, Burst: 10, BaseBackoff: time.Microsecond, MaxBackoff: time.Microsecond})
		ctx := context.Background()
		spec := dest.ListSpec{Title: "VIP"}
		if seed%2 == 0 { // half the runs claim the list, with a lease short enough to take over often
			st, err := store.NewFolder(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if spec.Registry, err = claims.New(st, "autopilot-main", claims.Options{Lease: 100 * time.Millisecond, Poll: time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		}
		for range 4 {
			id, err := c.PrepareList(ctx, spec)
			if err != nil {
				messages = append(messages, err.Error())
				continue
			}
			outs, err := c.Upsert(ctx, id, []dest.Contact{{Email: "ann@example.com"}, {Email: "bob@example.com"}}, dest.WriteAny)
			if err != nil {
				messages = append(messages, err.Error())
			}
			removed, err := c.Remove(ctx, id, []string{"ann@example.com", "cid@example.com"})
			if err != nil {
				messages = append(messages, err.Error())
			}
			for _, o := range append(outs, removed...) {
				if o.Reason != "" {
					messages = append(messages, o.Reason)
				}
			}
		}
	}
	if len(messages) < 10 {
		t.Fatalf("only %d errors under 5xx=0.6; the test proves little", len(messages))
	}
	longest, repeats := "", 0
	for _, m := range messages {
		if len(m) > len(longest) {
			longest = m
		}
		if seg, ok := repeatedSegment(m); ok {
			if repeats == 0 {
				t.Errorf("error repeats %q: %.300s", seg, m)
			}
			repeats++
		}
	}
	if repeats > 0 {
		t.Errorf("%d of %d errors repeat a layer", repeats, len(messages))
	}
	t.Logf("longest of %d errors (%d characters): %s", len(messages), len(longest), longest)
	if len(longest) >= 500 {
		t.Errorf("longest error is %d characters, want < 500: %.600s…", len(longest), longest)
	}
}

// repeatedSegment finds a ": "-separated segment of msg that occurs twice,
// or two segments led by the same gerund ("removing …: removing …"): the
// marks of an error wrapped by the same layer, or told twice.
func repeatedSegment(msg string) (string, bool) {
	seen := map[string]bool{}
	for _, seg := range strings.Split(msg, ": ") {
		verb, _, _ := strings.Cut(seg, " ")
		if !strings.HasSuffix(verb, "ing") {
			verb = ""
		}
		if seen[seg] || seen[verb] {
			return seg, true
		}
		seen[seg] = true
		if verb != "" {
			seen[verb] = true
		}
	}
	return "", false
}

// process is one run's view of a connection, as a separate process would
// hold it: its own client (through handler) and its own registry over the
// shared bucket folder.
type process struct {
	c      *autopilot.Client
	reg    *claims.Registry
	bucket string
}

// newProcess's lease is long, since no holder dies unless a test says so
// (lease > 0): a slow machine must not cut a creation short.
func newProcess(t *testing.T, handler http.Handler, bucket, holder string, opts autopilot.Options, lease time.Duration) process {
	t.Helper()
	c, _ := simClient(t, handler, opts)
	st, err := store.NewFolder(bucket)
	if err != nil {
		t.Fatal(err)
	}
	if lease == 0 {
		lease = time.Minute
	}
	reg, err := claims.New(st, "autopilot-main", claims.Options{Holder: holder, Lease: lease, Poll: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return process{c: c, reg: reg, bucket: bucket}
}

func (p process) prepare(title string, notes *[]string) (string, error) {
	spec := dest.ListSpec{Title: title, Registry: p.reg}
	if notes != nil {
		spec.Notice = func(s string) { *notes = append(*notes, s) }
	}
	return p.c.PrepareList(context.Background(), spec)
}

var fast = autopilot.Options{RequestsPerSecond: 1000, Burst: 10, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

// gateLists holds the first n GET /lists until all n have arrived, so n
// exports look the list up at the same moment.
type gateLists struct {
	next    http.Handler
	mu      sync.Mutex
	n, seen int
	all     chan struct{}
}

func (g *gateLists) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/lists") {
		g.mu.Lock()
		g.seen++
		held := g.seen <= g.n
		if g.seen == g.n {
			close(g.all)
		}
		g.mu.Unlock()
		if held {
			select {
			case <-g.all:
			case <-r.Context().Done():
				return
			}
		}
	}
	g.next.ServeHTTP(w, r)
}

// TestPrepareListSharedByTwoExports: two exports of one connection, in two
// processes, prepare the same list at the same moment: one list, every
// time.
func TestPrepareListSharedByTwoExports(t *testing.T) {
	t.Parallel()
	for trial := range 20 {
		s := sim.New(sim.Options{APIKey: simKey})
		gate := &gateLists{next: s, n: 2, all: make(chan struct{})}
		bucket := t.TempDir()
		procs := []process{newProcess(t, gate, bucket, "export a", fast, 0), newProcess(t, gate, bucket, "export b", fast, 0)}
		ids, errs := make([]string, len(procs)), make([]error, len(procs))
		var wg sync.WaitGroup
		for i, p := range procs {
			wg.Go(func() { ids[i], errs[i] = p.prepare("Shared list", nil) })
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("trial %d: %v; %v", trial, errs[0], errs[1])
		}
		if lists := titled(s, "Shared list"); len(lists) != 1 || ids[0] != lists[0] || ids[1] != lists[0] {
			t.Fatalf("trial %d: simulator holds %v; the exports got %v", trial, lists, ids)
		}
	}
}

// TestPrepareListAfterAClaimantDied: an export that claimed the list and
// died, after creating it or before, leaves one list to the next.
func TestPrepareListAfterAClaimantDied(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		spoil spoil // the dying export's POST /list
	}{
		{"after creating", spoil{status: http.StatusBadGateway, forward: true}},
		{"before creating", spoil{status: http.StatusServiceUnavailable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := sim.New(sim.Options{APIKey: simKey})
			bucket := t.TempDir()
			dying := fast
			dying.MaxAttempts = 1 // its only POST /list spoilt: it stops there, holding the claim
			proxy := newFaultProxy(t, s, map[string]map[int]spoil{"POST /list": {1: tt.spoil}})
			// The dying export's lease is what the next one waits before a
			// takeover.
			if _, err := newProcess(t, passTo(proxy.URL), bucket, "dying export", dying, time.Second).prepare("VIP", nil); err == nil {
				t.Fatal("the dying export's PrepareList succeeded")
			}
			next := newProcess(t, s, bucket, "next export", fast, time.Second)
			id, err := next.prepare("VIP", nil)
			if err != nil {
				t.Fatal(err)
			}
			if lists := titled(s, "VIP"); len(lists) != 1 || lists[0] != id {
				t.Errorf("simulator holds %v; PrepareList returned %s", lists, id)
			}
			if got := claimedID(t, bucket, next.reg, "VIP"); got != id {
				t.Errorf("the claim records %q, want %s", got, id)
			}
		})
	}
}

// claimedID is the id the bucket's claim on the list title records.
func claimedID(t *testing.T, bucket string, reg *claims.Registry, title string) string {
	t.Helper()
	st, err := store.NewFolder(bucket)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := st.Get(context.Background(), reg.Key(dest.ObjectList, title))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var claim struct{ ID string }
	if err := json.NewDecoder(body).Decode(&claim); err != nil {
		t.Fatal(err)
	}
	return claim.ID
}

// passTo forwards to a server already listening (the fault proxy).
func passTo(rawURL string) http.Handler {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err) // an httptest URL always parses
	}
	return httputil.NewSingleHostReverseProxy(u)
}

// TestPrepareListAdoptsTheOldestOfDuplicates: two lists titled alike
// already: the first listed (the oldest) is used, the report says which
// and names the other, and later calls keep to it.
func TestPrepareListAdoptsTheOldestOfDuplicates(t *testing.T) {
	t.Parallel()
	for _, withRegistry := range []bool{true, false} {
		t.Run(fmt.Sprintf("registry %v", withRegistry), func(t *testing.T) {
			t.Parallel()
			s := sim.New(sim.Options{APIKey: simKey})
			oldest, newer := s.CreateList("VIP"), s.CreateList("VIP")
			p := newProcess(t, s, t.TempDir(), "export", fast, 0)
			if !withRegistry {
				p.reg = nil
			}
			for call := range 3 {
				var notes []string
				spec := dest.ListSpec{Title: "VIP", Notice: func(n string) { notes = append(notes, n) }}
				if p.reg != nil {
					spec.Registry = p.reg
				}
				id, err := p.c.PrepareList(context.Background(), spec)
				if err != nil {
					t.Fatal(err)
				}
				if id != oldest {
					t.Errorf("call %d: PrepareList = %s, want the oldest, %s", call, id, oldest)
				}
				if len(notes) != 1 || !strings.Contains(notes[0], oldest) || !strings.Contains(notes[0], newer) {
					t.Errorf("call %d: notices %q, want one naming %s and %s", call, notes, oldest, newer)
				}
				if call == 0 {
					s.CreateList("VIP") // made by hand meanwhile: changes nothing
				}
			}
			if got := len(titled(s, "VIP")); got != 3 {
				t.Errorf("simulator holds %d lists titled VIP, want the 3 made here", got)
			}
		})
	}
}

// TestPrepareListRecreatesADeletedList: a list deleted by hand between two
// runs is made again through the claim, and its id exists.
func TestPrepareListRecreatesADeletedList(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Options{APIKey: simKey})
	p := newProcess(t, s, t.TempDir(), "export", fast, 0)
	first, err := p.prepare("VIP", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteList(first); err != nil {
		t.Fatal(err)
	}
	var notes []string
	second, err := p.prepare("VIP", &notes)
	if err != nil {
		t.Fatal(err)
	}
	if lists := titled(s, "VIP"); second == first || len(lists) != 1 || lists[0] != second {
		t.Errorf("after deleting %s: PrepareList = %s, simulator holds %v", first, second, lists)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], first) || !strings.Contains(notes[0], second) {
		t.Errorf("notices %q, want one naming the deleted %s and the new %s", notes, first, second)
	}
	again, err := p.prepare("VIP", nil)
	if err != nil || again != second {
		t.Errorf("third PrepareList = %s, %v; want %s", again, err, second)
	}
	if got := claimedID(t, p.bucket, p.reg, "VIP"); got != second {
		t.Errorf("the claim records %q, want %s", got, second)
	}
}

// TestListGone: an upsert or removal naming a list Autopilot no longer
// holds says so in a way the caller recognises (it drops the id it kept
// and prepares the list again); a removal of a non-member from a list
// that exists is still a success.
func TestListGone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		deleted  bool
		op       func(c *autopilot.Client, list string) ([]dest.Outcome, error)
		wantGone bool
		want     dest.Status
	}{
		{"upsert, list deleted", true, func(c *autopilot.Client, list string) ([]dest.Outcome, error) {
			return c.Upsert(context.Background(), list, []dest.Contact{{Email: "ann@example.com"}, {Email: "bob@example.com"}}, dest.WriteAny)
		}, true, dest.Failed},
		{"remove, list deleted", true, func(c *autopilot.Client, list string) ([]dest.Outcome, error) {
			return c.Remove(context.Background(), list, []string{"ann@example.com", "bob@example.com"})
		}, true, dest.Failed},
		{"remove non-members, list there", false, func(c *autopilot.Client, list string) ([]dest.Outcome, error) {
			return c.Remove(context.Background(), list, []string{"ann@example.com", "bob@example.com"})
		}, false, dest.Sent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := sim.New(sim.Options{APIKey: simKey})
			c, _ := simClient(t, s, fast)
			list, err := c.PrepareList(context.Background(), dest.ListSpec{Title: "VIP"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Upsert(context.Background(), "", []dest.Contact{{Email: "ann@example.com"}}, dest.WriteAny); err != nil {
				t.Fatal(err) // a contact, on no list
			}
			if tt.deleted {
				if err := s.DeleteList(list); err != nil {
					t.Fatal(err)
				}
			}
			outs, err := tt.op(c, list)
			if errors.Is(err, dest.ErrListGone) != tt.wantGone || (err != nil && !tt.wantGone) {
				t.Fatalf("err = %v, want ErrListGone: %v", err, tt.wantGone)
			}
			if tt.wantGone && !strings.Contains(err.Error(), list) {
				t.Errorf("err = %v, does not name the list", err)
			}
			for _, o := range outs {
				if o.Status != tt.want {
					t.Errorf("outcome %+v, want %s", o, tt.want)
				}
			}
			if n := len(outs); n != 2 {
				t.Errorf("%d outcomes, want 2", n)
			}
			if lookups := s.Counters().ByRoute["GET /lists"][200]; lookups > 2 {
				t.Errorf("GET /lists sent %d times; one to prepare and at most one to tell a 404 apart", lookups)
			}
		})
	}
}
