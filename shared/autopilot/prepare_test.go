package autopilot_test

import (
	"context"
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
	"github.com/segpilot/segpilot/shared/dest"
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
		for range 4 {
			id, err := c.PrepareList(ctx, dest.ListSpec{Title: "VIP"})
			if err != nil {
				messages = append(messages, err.Error())
				continue
			}
			outs, err := c.Upsert(ctx, id, []dest.Contact{{Email: "ann@example.com"}, {Email: "bob@example.com"}})
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
