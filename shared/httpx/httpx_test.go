package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/pace"
)

const testKey = "KEY-httpx-123"

// recorder answers the n-th request with steps[n], then with ok, keeping
// each request's body and key header.
type recorder struct {
	mu     sync.Mutex
	steps  []http.HandlerFunc
	bodies []string
	keys   []string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	i := len(rec.bodies)
	rec.bodies = append(rec.bodies, string(b))
	rec.keys = append(rec.keys, r.Header.Get("X-Key"))
	rec.mu.Unlock()
	if i < len(rec.steps) {
		rec.steps[i](w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func newClient(t *testing.T, h http.Handler, mod func(*Options)) (*Client, *sleeps) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	sl := &sleeps{}
	opts := Options{API: "test", BaseURL: srv.URL + "/v1", KeyHeader: "X-Key", Key: testKey,
		RequestsPerSecond: 1000, Timeout: time.Second, Sleep: sl.sleep}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, sl
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		err    error
		want   Class
	}{
		{200, nil, ClassOK}, {204, nil, ClassOK},
		{401, nil, ClassRefused}, {403, nil, ClassRefused},
		{429, nil, ClassThrottled},
		{408, nil, ClassRetry}, {500, nil, ClassRetry}, {503, nil, ClassRetry},
		{400, nil, ClassPermanent}, {404, nil, ClassPermanent}, {422, nil, ClassPermanent},
		{0, io.ErrUnexpectedEOF, ClassRetry},
		{0, context.DeadlineExceeded, ClassRetry},
		{0, errRedirectRefused, ClassPermanent},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.err); got != tt.want {
			t.Errorf("Classify(%d, %v) = %v, want %v", tt.status, tt.err, got, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		got, ok := RetryAfter(http.Header{"Retry-After": {tt.in}}, nil, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBackoffFullJitterCapped(t *testing.T) {
	t.Parallel()
	b := backoff{base: 100 * time.Millisecond, max: time.Second, maxHint: time.Minute, now: time.Now}
	for attempt, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 40: time.Second} {
		var top time.Duration
		for range 200 {
			d := b.wait(attempt, ClassRetry, http.Header{}, nil)
			if d < 0 || d > ceiling {
				t.Fatalf("attempt %d: wait %v outside [0, %v]", attempt, d, ceiling)
			}
			top = max(top, d)
		}
		if top < ceiling/2 {
			t.Errorf("attempt %d: 200 waits never above %v; jitter not spread over [0, %v]", attempt, top, ceiling)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	t.Parallel()
	mk := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		from, to string
		ok       bool
	}{
		{"https://api.example.com/v1/a", "https://api.example.com/v1/b", true},
		{"https://api.example.com/v1/a", "https://evil.example.com/v1/a", false},
		{"https://api.example.com/v1/a", "http://api.example.com/v1/a", false},
		{"http://127.0.0.1:1/v1/a", "http://127.0.0.1:1/v1/b", true},
		{"http://127.0.0.1:1/v1/a", "http://127.0.0.1:2/v1/b", false},
	}
	for _, tt := range tests {
		err := checkRedirect(mk(tt.to), []*http.Request{mk(tt.from)})
		if (err == nil) != tt.ok {
			t.Errorf("%s -> %s: err = %v, want ok=%v", tt.from, tt.to, err, tt.ok)
		}
	}
}

func TestNewDoesNotMutateCallerClient(t *testing.T) {
	t.Parallel()
	hc := &http.Client{Timeout: time.Second}
	if _, err := New(Options{BaseURL: "https://h/v1", KeyHeader: "k", Key: "k", HTTPClient: hc}); err != nil {
		t.Fatal(err)
	}
	if hc.CheckRedirect != nil || hc.Transport != nil || hc.Timeout != time.Second {
		t.Error("the caller's client was changed")
	}
}

// TestBodyReplayedOnRetry: every attempt carries the whole body, and the key.
func TestBodyReplayedOnRetry(t *testing.T) {
	t.Parallel()
	rec := &recorder{steps: []http.HandlerFunc{answer(503, `{}`), answer(500, `{}`)}}
	c, _ := newClient(t, rec, nil)
	var out struct{ OK bool }
	if err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/x", Body: map[string]string{"a": "b"}}, &out); err != nil || !out.OK {
		t.Fatalf("Do = %v, %+v", err, out)
	}
	if len(rec.bodies) != 3 {
		t.Fatalf("%d attempts, want 3", len(rec.bodies))
	}
	for i, b := range rec.bodies {
		if b != `{"a":"b"}` || rec.keys[i] != testKey {
			t.Errorf("attempt %d: body %q key %q", i+1, b, rec.keys[i])
		}
	}
	if s := c.Stats(); s.Requests != 3 || s.Retries != 2 || s.ByStatus[503] != 1 || s.ByStatus[500] != 1 || s.ByStatus[200] != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestRetryHintFromBody: an adapter's hint read from the answer's body (as
// Ortto's 429 carries it) sets the wait, capped by MaxRetryAfter.
func TestRetryHintFromBody(t *testing.T) {
	t.Parallel()
	hint := func(_ http.Header, body []byte, _ time.Time) (time.Duration, bool) {
		var doc struct {
			Error struct {
				Secs int `json:"try-in-seconds"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &doc) != nil || doc.Error.Secs <= 0 {
			return 0, false
		}
		return time.Duration(doc.Error.Secs) * time.Second, true
	}
	rec := &recorder{steps: []http.HandlerFunc{
		answer(429, `{"error":{"code":"rate-limit","try-in-seconds":7}}`),
		answer(429, `{"error":{"code":"rate-limit","try-in-seconds":700}}`),
	}}
	c, sl := newClient(t, rec, func(o *Options) { o.RetryHint = hint })
	if err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/x"}, nil); err != nil {
		t.Fatal(err)
	}
	if len(sl.d) != 2 || sl.d[0] != 7*time.Second || sl.d[1] != DefaultMaxRetryAfter {
		t.Errorf("waits %v, want [7s %v]", sl.d, DefaultMaxRetryAfter)
	}
	if s := c.Stats(); s.Throttled != 2 {
		t.Errorf("stats %+v", s)
	}
}

// TestErrorsTyped: what the port's callers sort on, and nothing of the key.
func TestErrorsTyped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		steps     []http.HandlerFunc
		unauth    bool
		status    int
		retryable bool
		message   string
	}{
		{"refused", []http.HandlerFunc{answer(401, `{"message":"bad key `+testKey+`"}`)}, true, 401, false, "bad key [redacted]"},
		{"permanent", []http.HandlerFunc{answer(422, `{"error":{"code":"x","message":"no such field"}}`)}, false, 422, false, "no such field"},
		{"gave up", []http.HandlerFunc{answer(502, ""), answer(502, ""), answer(502, "")}, false, 502, true, "gave up after 3 attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newClient(t, &recorder{steps: tt.steps}, func(o *Options) { o.MaxAttempts = 3 })
			err := c.Do(context.Background(), Request{Method: http.MethodGet, Path: "/p/a@b.example"}, nil)
			var ue *dest.UnauthorizedError
			var re *dest.RequestError
			switch {
			case tt.unauth:
				if !errors.As(err, &ue) || ue.Status != tt.status || !strings.Contains(ue.Error(), tt.message) {
					t.Fatalf("err = %v", err)
				}
			case !errors.As(err, &re) || re.Status != tt.status || re.Retryable != tt.retryable || !strings.Contains(re.Message, tt.message):
				t.Fatalf("err = %#v", err)
			case re.API != "test" || re.Path != "/p/a@b.example" || !strings.Contains(re.Error(), "a***@b.example"):
				t.Errorf("err %v does not name the call with the email masked", re)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error leaks the key: %v", err)
			}
			if dest.IsRetryable(err) != tt.retryable {
				t.Errorf("IsRetryable = %v", !tt.retryable)
			}
		})
	}
}

// routes answers by "METHOD /path": each route's n-th request with its
// steps[n], then with its fallback; it counts every request.
type routes struct {
	mu    sync.Mutex
	steps map[string][]http.HandlerFunc
	last  map[string]http.HandlerFunc
	seen  []string
}

func (rs *routes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + strings.TrimPrefix(r.URL.Path, "/v1")
	rs.mu.Lock()
	n := 0
	for _, s := range rs.seen {
		if s == route {
			n++
		}
	}
	rs.seen = append(rs.seen, route)
	h := rs.last[route]
	if n < len(rs.steps[route]) {
		h = rs.steps[route][n]
	}
	rs.mu.Unlock()
	if h == nil {
		h = answer(404, `{"message":"no such route"}`)
	}
	h(w, r)
}

func (rs *routes) sent() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.seen...)
}

// TestBeforeRetry: a request that got no answer, or a 5xx, may have been
// applied; the hook asks, through its probe, and its answer decides. The
// probe's own requests retry without asking the hook again, and spend the
// call's attempts.
func TestBeforeRetry(t *testing.T) {
	t.Parallel()
	found := answer(200, `{"found":true}`)
	missing := answer(200, `{"found":false}`)
	tests := []struct {
		name        string
		maxAttempts int
		steps       map[string][]http.HandlerFunc
		last        map[string]http.HandlerFunc
		wantApplied bool
		wantErr     string // in the error; "" for none
		wantChecks  int
		wantSent    []string
	}{
		{name: "applied ends the call", maxAttempts: 6,
			last:        map[string]http.HandlerFunc{"POST /op": answer(502, ""), "GET /check": found},
			wantApplied: true, wantChecks: 1, wantSent: []string{"POST /op", "GET /check"}},
		{name: "not applied retries the call", maxAttempts: 6,
			steps:      map[string][]http.HandlerFunc{"POST /op": {answer(502, "")}},
			last:       map[string]http.HandlerFunc{"POST /op": answer(200, `{"done":1}`), "GET /check": missing},
			wantChecks: 1, wantSent: []string{"POST /op", "GET /check", "POST /op"}},
		{name: "a failed check retries itself, never the hook", maxAttempts: 6,
			steps:       map[string][]http.HandlerFunc{"GET /check": {answer(503, "")}},
			last:        map[string]http.HandlerFunc{"POST /op": answer(502, ""), "GET /check": found},
			wantApplied: true, wantChecks: 1, wantSent: []string{"POST /op", "GET /check", "GET /check"}},
		{name: "one budget for the call and its checks", maxAttempts: 4,
			last:       map[string]http.HandlerFunc{"POST /op": answer(502, ""), "GET /check": answer(503, `{"message":"down"}`)},
			wantErr:    "checking whether POST /op was applied: test GET /check: status 503: gave up after 4 attempts: down",
			wantChecks: 1, wantSent: []string{"POST /op", "GET /check", "GET /check", "GET /check"}},
		{name: "a check between spent attempts", maxAttempts: 2,
			last:       map[string]http.HandlerFunc{"POST /op": answer(502, `{"message":"bad gateway"}`), "GET /check": missing},
			wantErr:    "test POST /op: status 502: gave up after 2 attempts: bad gateway",
			wantChecks: 1, wantSent: []string{"POST /op", "GET /check"}},
		{name: "throttled is not asked", maxAttempts: 6,
			steps:    map[string][]http.HandlerFunc{"POST /op": {answer(429, "")}},
			last:     map[string]http.HandlerFunc{"POST /op": answer(200, `{"done":1}`)},
			wantSent: []string{"POST /op", "POST /op"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rs := &routes{steps: tt.steps, last: tt.last}
			c, _ := newClient(t, rs, func(o *Options) { o.MaxAttempts = tt.maxAttempts })
			checks := 0
			out := struct{ Done int }{Done: -1}
			err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/op",
				BeforeRetry: func(ctx context.Context, probe Caller) (bool, error) {
					checks++
					var got struct{ Found bool }
					err := probe.Do(ctx, Request{Method: http.MethodGet, Path: "/check"}, &got)
					return got.Found, err
				}}, &out)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Do: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Do = %v, want an error holding %q", err, tt.wantErr)
			case tt.wantErr != "" && !dest.IsRetryable(err):
				t.Errorf("IsRetryable(%v) = false", err)
			}
			if checks != tt.wantChecks {
				t.Errorf("hook asked %d times, want %d", checks, tt.wantChecks)
			}
			if got := rs.sent(); strings.Join(got, ",") != strings.Join(tt.wantSent, ",") {
				t.Errorf("sent %v, want %v", got, tt.wantSent)
			}
			switch {
			case tt.wantApplied && out.Done != -1:
				t.Errorf("a call the hook ended decoded %+v into out; it had no answer", out)
			case !tt.wantApplied && tt.wantErr == "" && out.Done != 1:
				t.Errorf("out = %+v, want the answer decoded", out)
			}
		})
	}
}

// TestProbeRefusesAHook: a check's request carrying a check of its own is
// refused, not sent.
func TestProbeRefusesAHook(t *testing.T) {
	t.Parallel()
	rs := &routes{last: map[string]http.HandlerFunc{"POST /op": answer(502, ""), "GET /check": answer(200, `{}`)}}
	c, _ := newClient(t, rs, nil)
	err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/op",
		BeforeRetry: func(ctx context.Context, probe Caller) (bool, error) {
			return false, probe.Do(ctx, Request{Method: http.MethodGet, Path: "/check",
				BeforeRetry: func(context.Context, Caller) (bool, error) { return true, nil }}, nil)
		}}, nil)
	if !errors.Is(err, ErrNestedCheck) {
		t.Fatalf("Do = %v, want ErrNestedCheck", err)
	}
	if got := rs.sent(); len(got) != 1 {
		t.Errorf("sent %v, want only the first POST", got)
	}
}

// TestEmptyAnswer: a 2xx with no body is "no answer" to a caller that
// expects one, never an empty result; a caller that expects none is fine.
func TestEmptyAnswer(t *testing.T) {
	t.Parallel()
	rec := &recorder{steps: []http.HandlerFunc{answer(200, ""), answer(200, " \n")}}
	c, _ := newClient(t, rec, nil)
	if err := c.Do(context.Background(), Request{Method: http.MethodDelete, Path: "/x"}, nil); err != nil {
		t.Errorf("Do without out: %v", err)
	}
	var out struct{ Lists []string }
	err := c.Do(context.Background(), Request{Method: http.MethodGet, Path: "/lists"}, &out)
	var re *dest.RequestError
	if !errors.As(err, &re) || re.Status != 200 || re.Retryable || !strings.Contains(err.Error(), "test GET /lists: status 200: the answer is empty") {
		t.Errorf("Do with out = %v, want a permanent *RequestError", err)
	}
}

// TestProbeWithNoAttemptsLeft: a check's request finding its call's
// attempts spent is not sent, and says why.
func TestProbeWithNoAttemptsLeft(t *testing.T) {
	t.Parallel()
	rs := &routes{last: map[string]http.HandlerFunc{"POST /op": answer(502, ""), "GET /check": answer(200, `{}`)}}
	c, _ := newClient(t, rs, func(o *Options) { o.MaxAttempts = 2 })
	err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/op",
		BeforeRetry: func(ctx context.Context, probe Caller) (bool, error) {
			if err := probe.Do(ctx, Request{Method: http.MethodGet, Path: "/check"}, nil); err != nil {
				return false, err
			}
			return false, probe.Do(ctx, Request{Method: http.MethodGet, Path: "/check"}, nil)
		}}, nil)
	if err == nil || !strings.Contains(err.Error(), "test GET /check: not sent: the call's 2 attempts are spent") || !dest.IsRetryable(err) {
		t.Fatalf("Do = %v", err)
	}
	if got := rs.sent(); len(got) != 2 {
		t.Errorf("sent %v, want the POST and one check", got)
	}
}

// TestMalformedAnswersAreLimited: requests an API answers 400 or 422 tell
// the limiter (pace.LimitRefused), so workers sharing it send at most its
// limit of them in any window after the first refusal, as the API saw
// them. (Seen failing with the pacer not telling the limiter: all 12
// within a few milliseconds.)
func TestMalformedAnswersAreLimited(t *testing.T) {
	t.Parallel()
	const limit, window = 3, 400 * time.Millisecond
	var mu sync.Mutex
	var arrived []time.Time
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived = append(arrived, time.Now())
		n := len(arrived)
		mu.Unlock()
		status := http.StatusBadRequest
		if n%2 == 0 {
			status = http.StatusUnprocessableEntity
		}
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":"malformed"}`)
	})
	l := pace.New(1000, 10)
	l.LimitRefused(limit, window)
	c, _ := newClient(t, h, func(o *Options) { o.Limiter = l })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 3 {
				if err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/x"}, nil); err == nil {
					t.Error("a 400 answered as a success")
				}
			}
		})
	}
	wg.Wait()
	if len(arrived) != 12 {
		t.Fatalf("%d requests arrived, want 12 (a 400 is not retried)", len(arrived))
	}
	// The first wave (the 4 workers' requests in flight before any answer)
	// goes out unheld; from the first refusal on, the limit holds.
	for i := 4; i < len(arrived); i++ {
		in := 0
		for _, at := range arrived[i:] {
			if at.Sub(arrived[i]) < window-20*time.Millisecond { // the server's clock reads a little after the client's
				in++
			}
		}
		if in > limit {
			t.Fatalf("%d malformed requests within %v of request %d; the limit is %d", in, window, i+1, limit)
		}
	}
}
