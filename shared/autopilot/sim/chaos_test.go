package sim_test

import (
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

func TestRateLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		retryAfter bool
	}{
		{"with Retry-After", true},
		{"without Retry-After", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A bucket that refills every ~17 minutes: only the burst passes.
			s, c := start(t, sim.Options{RequestsPerSecond: 0.001, Burst: 2, RetryAfter: tt.retryAfter})
			wrong := *c
			wrong.key = "wrong"
			for range 3 {
				wrong.call("GET", "/account", nil, http.StatusUnauthorized) // uses no budget
			}
			c.call("GET", "/account", nil, http.StatusOK)
			c.call("GET", "/account", nil, http.StatusOK)
			status, body, h := c.send("GET", "/account", nil)
			if status != http.StatusTooManyRequests {
				t.Fatalf("third request = %d %s, want 429", status, body)
			}
			ra := h.Get("Retry-After")
			if !tt.retryAfter {
				if ra != "" {
					t.Errorf("Retry-After = %q, want none", ra)
				}
				return
			}
			if n, err := strconv.Atoi(ra); err != nil || n < 1 {
				t.Errorf("Retry-After = %q, want whole seconds >= 1", ra)
			}
			if got := s.Counters().ByStatus[http.StatusTooManyRequests]; got != 1 {
				t.Errorf("429s counted = %d, want 1", got)
			}
		})
	}
}

// outcomes sends n upserts of distinct emails one after another and
// returns what each got: a status or "error".
func outcomes(t *testing.T, opts sim.Options, n int) (*sim.Server, []string) {
	t.Helper()
	s, c := start(t, opts)
	c.hc.Timeout = 2 * time.Second
	out := make([]string, n)
	for i := range out {
		resp, err := c.try("POST", "/contact", map[string]any{"contact": map[string]any{"Email": fmt.Sprintf("f%02d@example.com", i)}})
		if err != nil {
			out[i] = "error"
			continue
		}
		resp.Body.Close()
		out[i] = strconv.Itoa(resp.StatusCode)
		if ra := resp.Header.Get("Retry-After"); resp.StatusCode == http.StatusTooManyRequests && (ra == "1") != opts.RetryAfter {
			t.Errorf("fault 429 Retry-After = %q with RetryAfter %v", ra, opts.RetryAfter)
		}
	}
	return s, out
}

func count(xs []string, want ...string) int {
	n := 0
	for _, x := range xs {
		for _, w := range want {
			if x == w {
				n++
			}
		}
	}
	return n
}

func TestFaultsAreDeterministic(t *testing.T) {
	t.Parallel()
	const n = 40
	tests := []struct {
		name     string
		faults   sim.Faults
		fault    []string                 // outcomes the fault produces
		injected func(*sim.Injected) *int // its count in Counters
	}{
		{"5xx", sim.Faults{ServerErrorRate: 0.4}, []string{"500", "502", "503"}, func(in *sim.Injected) *int { return &in.ServerErrors }},
		{"429 burst", sim.Faults{ThrottleBurstRate: 0.15, ThrottleBurstLen: 3}, []string{"429"}, func(in *sim.Injected) *int { return &in.Throttled }},
		{"drop", sim.Faults{DropRate: 0.3}, []string{"error"}, func(in *sim.Injected) *int { return &in.Dropped }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := sim.Options{Faults: tt.faults, Seed: 42, RetryAfter: true}
			s, first := outcomes(t, opts, n)
			_, second := outcomes(t, opts, n)
			if !reflect.DeepEqual(first, second) {
				t.Errorf("same seed, different outcomes:\n%v\n%v", first, second)
			}
			faulted := count(first, tt.fault...)
			if faulted == 0 || faulted == n || faulted+count(first, "200") != n {
				t.Fatalf("outcomes %v: want a mix of 200 and %v only", first, tt.fault)
			}
			// Faulted requests are not applied.
			if got := len(s.Dump().Contacts); got != n-faulted {
				t.Errorf("contacts = %d, want %d (one per 200)", got, n-faulted)
			}
			eventually(t, "every request counted", func() bool { return s.Counters().Total == n })
			cn := s.Counters()
			if got := cn.ContactsUpserted; got != n-faulted {
				t.Errorf("ContactsUpserted = %d, want %d", got, n-faulted)
			}
			// Only this class is counted, once per faulted request.
			var want sim.Injected
			*tt.injected(&want) = faulted
			if cn.Injected != want {
				t.Errorf("Injected = %+v, want %+v", cn.Injected, want)
			}
			opts.Seed = 43
			if _, other := outcomes(t, opts, n); reflect.DeepEqual(first, other) {
				t.Errorf("seeds 42 and 43 gave the same outcomes %v", first)
			}
		})
	}
}

func TestThrottleBurstLength(t *testing.T) {
	t.Parallel()
	_, got := outcomes(t, sim.Options{Faults: sim.Faults{ThrottleBurstRate: 0.1, ThrottleBurstLen: 4}, Seed: 7}, 60)
	runs := strings.Fields(strings.ReplaceAll(strings.Join(got, ""), "200", " "))
	for i, run := range runs {
		length := len(run) / 3
		last := i == len(runs)-1 && strings.HasSuffix(strings.Join(got, ""), run)
		if length%4 != 0 && !last {
			t.Errorf("a run of %d 429s, want a multiple of the burst length 4 (outcomes %v)", length, got)
		}
	}
	if len(runs) == 0 {
		t.Errorf("no 429 burst in %v", got)
	}
}

func TestDropClosesConnection(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{Faults: sim.Faults{DropRate: 1}})
	resp, err := c.try("POST", "/contact", map[string]any{"contact": map[string]any{"Email": "d@example.com"}})
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want a connection error", resp.StatusCode)
	}
	eventually(t, "the drop counted", func() bool { return s.Counters().ByStatus[0] == 1 })
	if n := len(s.Dump().Contacts); n != 0 {
		t.Errorf("contacts = %d, want 0 (a dropped request is not applied)", n)
	}
}

func TestHangAppliesThenStalls(t *testing.T) {
	t.Parallel()
	// HangFor far beyond the test timeout: cleanup returns only if the
	// server gives up when the client does.
	s, c := start(t, sim.Options{Faults: sim.Faults{HangRate: 1, HangFor: time.Hour}})
	c.hc.Timeout = 200 * time.Millisecond
	resp, err := c.try("POST", "/contact", map[string]any{"contact": map[string]any{"Email": "h@example.com"}})
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want a client timeout", resp.StatusCode)
	}
	eventually(t, "the hung request applied", func() bool {
		_, ok := findContact(s.Dump(), "h@example.com")
		return ok
	})
	eventually(t, "the server to give up", func() bool {
		cn := s.Counters()
		return cn.ByStatus[0] == 1 && cn.ContactsUpserted == 1
	})
}

func TestHangAnswersEventually(t *testing.T) {
	t.Parallel()
	_, c := start(t, sim.Options{Faults: sim.Faults{HangRate: 1, HangFor: time.Millisecond}})
	c.upsert(map[string]any{"Email": "patient@example.com"})
}

func TestLatencyRespectsClient(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{Faults: sim.Faults{Latency: time.Hour}})
	c.hc.Timeout = 100 * time.Millisecond
	resp, err := c.try("GET", "/account", nil)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want a client timeout", resp.StatusCode)
	}
	eventually(t, "the server to give up", func() bool { return s.Counters().ByStatus[0] == 1 })
}

func TestRejectEmails(t *testing.T) {
	t.Parallel()
	f, err := sim.ParseFaults(`reject=@bad\.example$`)
	if err != nil {
		t.Fatal(err)
	}
	s, c := start(t, sim.Options{Faults: f})
	out := c.call("POST", "/contacts", map[string]any{"contacts": []any{
		map[string]any{"Email": "good@example.com"},
		map[string]any{"Email": "x@bad.example"},
		map[string]any{"Email": "y@bad.example"},
	}}, http.StatusBadRequest)
	msg, _ := out["message"].(string)
	if !strings.Contains(msg, "x@bad.example") || !strings.Contains(msg, "y@bad.example") {
		t.Errorf("message %q does not name the rejected emails", msg)
	}
	c.call("POST", "/contact", map[string]any{"contact": map[string]any{"Email": "z@bad.example"}}, http.StatusBadRequest)
	if n := len(s.Dump().Contacts); n != 0 {
		t.Errorf("contacts = %d, want 0 (rejected requests apply nothing)", n)
	}
	c.upsert(map[string]any{"Email": "good@example.com"})
}

func TestInvalidFaultsAnswer500(t *testing.T) {
	t.Parallel()
	_, c := start(t, sim.Options{Faults: sim.Faults{RejectEmails: "("}})
	c.call("GET", "/account", nil, http.StatusInternalServerError)
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	listID := s.CreateList("Shared")
	const workers, perWorker, batch = 6, 10, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*3)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				contacts := make([]any, batch)
				for j := range contacts {
					// Workers overlap on emails so upserts race on the same contacts.
					contacts[j] = map[string]any{"Email": fmt.Sprintf("c%03d@example.com", (w%2)*100+i*batch/2+j), "_autopilot_list": listID}
				}
				for _, req := range []struct {
					method, path string
					body         any
				}{
					{"POST", "/contacts", map[string]any{"contacts": contacts}},
					{"GET", "/contacts", nil},
					{"GET", "/list/" + listID + "/contacts", nil},
				} {
					resp, err := c.try(req.method, req.path, req.body)
					if err != nil {
						errs <- err
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("%s %s = %d", req.method, req.path, resp.StatusCode)
					}
				}
				s.Dump()
				s.Counters()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := s.Dump()
	seen := map[string]bool{}
	for w := range workers {
		for i := range perWorker {
			for j := range batch {
				seen[fmt.Sprintf("c%03d@example.com", (w%2)*100+i*batch/2+j)] = true
			}
		}
	}
	if len(st.Contacts) != len(seen) || len(st.Lists[0].Members) != len(seen) {
		t.Errorf("contacts = %d, members = %d, want %d each", len(st.Contacts), len(st.Lists[0].Members), len(seen))
	}
	cn := s.Counters()
	if cn.Total != workers*perWorker*3 || cn.ContactsUpserted != workers*perWorker*batch {
		t.Errorf("Total = %d, ContactsUpserted = %d; want %d, %d", cn.Total, cn.ContactsUpserted, workers*perWorker*3, workers*perWorker*batch)
	}
}

// TestInjectedHangsAndRejects: the two faults that still run the route are
// counted too, a hang even when the client leaves before the answer.
func TestInjectedHangsAndRejects(t *testing.T) {
	t.Parallel()
	const n = 30
	tests := []struct {
		name   string
		faults sim.Faults
		want   func(got []string) sim.Injected
	}{
		{"hang", sim.Faults{HangRate: 0.3, HangFor: time.Minute}, func(got []string) sim.Injected {
			return sim.Injected{Hung: count(got, "error")}
		}},
		{"reject", sim.Faults{RejectEmails: `^f[0-9]3@`}, func(got []string) sim.Injected {
			return sim.Injected{Rejected: count(got, "400")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := start(t, sim.Options{Faults: tt.faults, Seed: 42})
			c.hc.Timeout = 100 * time.Millisecond // gives up on a hang, which the simulator then cuts short
			got := make([]string, n)
			for i := range got {
				resp, err := c.try("POST", "/contact", map[string]any{"contact": map[string]any{"Email": fmt.Sprintf("f%02d@example.com", i)}})
				if err != nil {
					got[i] = "error"
					continue
				}
				resp.Body.Close()
				got[i] = strconv.Itoa(resp.StatusCode)
			}
			want := tt.want(got)
			if want == (sim.Injected{}) || count(got, "200") == n {
				t.Fatalf("outcomes %v: the fault never happened", got)
			}
			eventually(t, "every request counted", func() bool { return s.Counters().Total == n })
			if in := s.Counters().Injected; in != want {
				t.Errorf("Injected = %+v, want %+v for outcomes %v", in, want, got)
			}
		})
	}
}
