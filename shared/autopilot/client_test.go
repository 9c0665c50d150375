package autopilot

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/pace"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"valid", Options{BaseURL: "https://api2.autopilothq.com/v1", APIKey: "k"}, true},
		{"valid trailing slash", Options{BaseURL: "http://127.0.0.1:8089/v1/", APIKey: "k"}, true},
		{"no key", Options{BaseURL: "https://api2.autopilothq.com/v1"}, false},
		{"blank key", Options{BaseURL: "https://api2.autopilothq.com/v1", APIKey: "  "}, false},
		{"ftp scheme", Options{BaseURL: "ftp://host/v1", APIKey: "k"}, false},
		{"relative", Options{BaseURL: "/v1", APIKey: "k"}, false},
		{"unparsable", Options{BaseURL: "http://[::1", APIKey: "k"}, false},
		{"query", Options{BaseURL: "https://h/v1?x=1", APIKey: "k"}, false},
		{"key with newline", Options{BaseURL: "https://h/v1", APIKey: "KEY-1\r\nX: y"}, false},
		{"negative rate", Options{BaseURL: "https://h/v1", APIKey: "k", RequestsPerSecond: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New() error = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), "KEY-") {
				t.Errorf("error leaks key: %v", err)
			}
		})
	}
}

func TestPayload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ct     Contact
		listID string
		want   string
	}{
		{"full", Contact{Email: "a@x.com", FirstName: "Ann", LastName: "Lee", Custom: map[string]any{"string--Loyalty--Tier": "gold", "integer--Orders": 12}}, "contactlist_1",
			`{"Email":"a@x.com","FirstName":"Ann","LastName":"Lee","custom":{"integer--Orders":12,"string--Loyalty--Tier":"gold"},"_autopilot_list":"contactlist_1"}`},
		{"empties omitted", Contact{Email: "a@x.com", FirstName: " ", Custom: map[string]any{"string--A": "", "string--B": nil, "boolean--C": false, "integer--D": 0}}, "",
			`{"Email":"a@x.com","custom":{"boolean--C":false,"integer--D":0}}`},
		{"no custom", Contact{Email: "a@x.com"}, "", `{"Email":"a@x.com"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tt.ct.payload(tt.listID))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &w); err != nil {
				t.Fatal(err)
			}
			gj, _ := json.Marshal(g) // re-encoding sorts keys; both decoded from valid JSON
			wj, _ := json.Marshal(w)
			if string(gj) != string(wj) {
				t.Errorf("payload = %s, want %s", gj, wj)
			}
			if strings.Contains(strings.ToLower(string(got)), "unsubscribed") {
				t.Errorf("payload carries unsubscribed: %s", got)
			}
		})
	}
}

func TestUpsertContactsSplitsIntoCallsOf100(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sizes []int
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/contacts" {
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
		for h, want := range map[string]string{apiKeyHeader: testKey, "Content-Type": "application/json", "Accept": "application/json"} {
			if got := r.Header.Get(h); got != want {
				t.Errorf("header %s = %q, want %q", h, got, want)
			}
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		var req struct {
			Contacts []map[string]any `json:"contacts"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Error(err)
		}
		for _, ct := range req.Contacts {
			if ct["_autopilot_list"] != "contactlist_9" {
				t.Errorf("contact without list: %v", ct)
			}
		}
		mu.Lock()
		sizes = append(sizes, len(req.Contacts))
		mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		okBulk(w, r)
	})
	h := newHarness(t, handler, nil)
	cs := makeContacts(250, "example.com")
	outs, err := h.c.UpsertContacts(context.Background(), "contactlist_9", cs)
	if err != nil {
		t.Fatal(err)
	}
	if got := []int{100, 100, 50}; !equalInts(sizes, got) {
		t.Errorf("batch sizes = %v, want %v", sizes, got)
	}
	for i, o := range outs {
		if o.Email != cs[i].Email || o.Status != StatusSent || o.ContactID != "person_"+cs[i].Email {
			t.Fatalf("outcome %d = %+v", i, o)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestUpsertContactsErrorClasses(t *testing.T) {
	t.Parallel()
	fixedNow := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		steps        []http.HandlerFunc
		contacts     int
		wantErr      bool
		wantStatus   map[Status]int
		wantRequests int
		wantReason   string          // substring of every non-sent outcome's reason
		wantSleeps   []time.Duration // exact recorded backoff waits, when not nil
		maxSleep     time.Duration   // bound on each wait, when not zero
		check        func(t *testing.T, s Stats)
	}{
		{name: "401 stops at once", steps: []http.HandlerFunc{status(401)}, contacts: 250, wantErr: true,
			wantStatus: map[Status]int{StatusFailed: 250}, wantRequests: 1, wantReason: "refused the API key"},
		{name: "403 stops at once", steps: []http.HandlerFunc{okBulk, status(403)}, contacts: 250, wantErr: true,
			wantStatus: map[Status]int{StatusSent: 100, StatusFailed: 150}, wantRequests: 2, wantReason: "status 403"},
		{name: "429 with Retry-After seconds", steps: []http.HandlerFunc{status(429, "Retry-After", "2")}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 2, wantSleeps: []time.Duration{2 * time.Second},
			check: func(t *testing.T, s Stats) {
				if s.Throttled != 1 || s.Retries != 1 || s.ByStatus[429] != 1 || s.ByStatus[200] != 1 {
					t.Errorf("stats = %+v", s)
				}
			}},
		{name: "429 with Retry-After date", steps: []http.HandlerFunc{status(429, "Retry-After", fixedNow.Add(7*time.Second).Format(http.TimeFormat))}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 2, wantSleeps: []time.Duration{7 * time.Second}},
		{name: "429 Retry-After capped", steps: []http.HandlerFunc{status(429, "Retry-After", "3600")}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 2, wantSleeps: []time.Duration{60 * time.Second}},
		{name: "429 without Retry-After backs off", steps: []http.HandlerFunc{status(429), status(429)}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 3, maxSleep: time.Second},
		{name: "5xx then success", steps: []http.HandlerFunc{status(503), status(500)}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 3, maxSleep: time.Second},
		{name: "persistent 5xx fails", steps: repeat(status(502), 6), contacts: 10,
			wantStatus: map[Status]int{StatusFailed: 10}, wantRequests: 6, wantReason: "status 502: gave up after 6 attempts", maxSleep: 16 * time.Second},
		{name: "persistent 5xx fails only its batch", steps: append([]http.HandlerFunc{okBulk}, repeat(status(500), 6)...), contacts: 250,
			wantStatus: map[Status]int{StatusSent: 150, StatusFailed: 100}, wantRequests: 8, wantReason: "gave up"},
		{name: "connection drop then success", steps: []http.HandlerFunc{drop}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 2,
			check: func(t *testing.T, s Stats) {
				if s.NetworkErrors != 1 {
					t.Errorf("NetworkErrors = %d, want 1", s.NetworkErrors)
				}
			}},
		{name: "timeout then success", steps: []http.HandlerFunc{hang}, contacts: 10,
			wantStatus: map[Status]int{StatusSent: 10}, wantRequests: 2,
			check: func(t *testing.T, s Stats) {
				if s.Timeouts != 1 {
					t.Errorf("Timeouts = %d, want 1", s.Timeouts)
				}
			}},
		{name: "408 retried", steps: []http.HandlerFunc{status(408)}, contacts: 1,
			wantStatus: map[Status]int{StatusSent: 1}, wantRequests: 2},
		{name: "400 single contact rejected", steps: []http.HandlerFunc{status(400)}, contacts: 1,
			wantStatus: map[Status]int{StatusRejected: 1}, wantRequests: 1, wantReason: "answer 400"},
		{name: "404 is permanent, no split", steps: []http.HandlerFunc{status(404)}, contacts: 10,
			wantStatus: map[Status]int{StatusFailed: 10}, wantRequests: 1, wantReason: "status 404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := &script{steps: tt.steps, fallback: okBulk}
			h := newHarness(t, sc, func(o *Options) {
				o.Timeout = 200 * time.Millisecond
				o.now = func() time.Time { return fixedNow }
			})
			outs, err := h.c.UpsertContacts(context.Background(), "", makeContacts(tt.contacts, "example.com"))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				var ue *UnauthorizedError
				if !errors.As(err, &ue) {
					t.Errorf("err = %T %v, want *UnauthorizedError", err, err)
				}
				if IsRetryable(err) {
					t.Error("unauthorized must not be retryable")
				}
			}
			if len(outs) != tt.contacts {
				t.Fatalf("%d outcomes for %d contacts", len(outs), tt.contacts)
			}
			if got := countStatus(outs); !equalStatus(got, tt.wantStatus) {
				t.Errorf("statuses = %v, want %v", got, tt.wantStatus)
			}
			for _, o := range outs {
				if o.Status != StatusSent && !strings.Contains(o.Reason, tt.wantReason) {
					t.Errorf("reason %q lacks %q", o.Reason, tt.wantReason)
				}
			}
			if got := sc.count(); got != tt.wantRequests {
				t.Errorf("requests = %d, want %d", got, tt.wantRequests)
			}
			if got := h.c.Stats().Requests; got != tt.wantRequests {
				t.Errorf("Stats().Requests = %d, want %d", got, tt.wantRequests)
			}
			sleeps := h.slept()
			if tt.wantSleeps != nil && !equalDurations(sleeps, tt.wantSleeps) {
				t.Errorf("waits = %v, want %v", sleeps, tt.wantSleeps)
			}
			for _, d := range sleeps {
				if tt.maxSleep > 0 && (d < 0 || d > tt.maxSleep) {
					t.Errorf("wait %v outside [0, %v]", d, tt.maxSleep)
				}
			}
			if tt.check != nil {
				tt.check(t, h.c.Stats())
			}
			assertNoSecrets(t, h.logs.String())
			for _, o := range outs {
				assertNoSecrets(t, o.Reason)
			}
		})
	}
}

func repeat(f http.HandlerFunc, n int) []http.HandlerFunc {
	out := make([]http.HandlerFunc, n)
	for i := range out {
		out[i] = f
	}
	return out
}

func equalStatus(a, b map[Status]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// assertNoSecrets fails when s holds the test key or an unmasked email of
// the test data.
func assertNoSecrets(t *testing.T, s string) {
	t.Helper()
	if strings.Contains(s, testKey) {
		t.Errorf("key leaked: %q", s)
	}
	if m := regexp.MustCompile(`user\d+@`).FindString(s); m != "" {
		t.Errorf("raw email leaked (%s): %q", m, s)
	}
}

func TestBadContactsIsolated(t *testing.T) {
	t.Parallel()
	bad := regexp.MustCompile(`^user0(07|42|93)@`)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		var req struct {
			Contacts []map[string]any `json:"contacts"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Error(err)
		}
		for _, ct := range req.Contacts {
			if e, _ := ct["Email"].(string); bad.MatchString(e) {
				writeJSON(w, 400, map[string]string{"error": "invalid email", "message": "bad address"})
				return
			}
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		okBulk(w, r)
	})
	h := newHarness(t, handler, nil)
	cs := makeContacts(100, "example.com")
	outs, err := h.c.UpsertContacts(context.Background(), "", cs)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		wantBad := bad.MatchString(cs[i].Email)
		switch {
		case wantBad && (o.Status != StatusRejected || o.Reason != "bad address"):
			t.Errorf("bad contact %d: %+v", i, o)
		case !wantBad && o.Status != StatusSent:
			t.Errorf("good contact %d: %+v", i, o)
		}
	}
	if got := countStatus(outs); got[StatusRejected] != 3 || got[StatusSent] != 97 {
		t.Errorf("statuses = %v", got)
	}
}

func TestMissingEmailRejectedLocally(t *testing.T) {
	t.Parallel()
	sc := &script{fallback: okBulk}
	h := newHarness(t, sc, nil)
	outs, err := h.c.UpsertContacts(context.Background(), "", []Contact{{Email: "a@x.com"}, {Email: " "}, {Email: "b@x.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if outs[0].Status != StatusSent || outs[1].Status != StatusRejected || outs[2].Status != StatusSent || sc.count() != 1 {
		t.Errorf("outcomes = %+v, requests = %d", outs, sc.count())
	}
}

func TestUnauthorizedStopsAllGoroutines(t *testing.T) {
	t.Parallel()
	sc := &script{fallback: status(401)}
	h := newHarness(t, sc, func(o *Options) { o.RequestsPerSecond, o.Burst = 50, 1 })
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for g := range 8 {
		wg.Go(func() {
			_, errs[g] = h.c.UpsertContacts(context.Background(), "", makeContacts(300, "example.com"))
		})
	}
	wg.Wait()
	for g, err := range errs {
		var ue *UnauthorizedError
		if !errors.As(err, &ue) || ue.Status != 401 {
			t.Errorf("goroutine %d: err = %v", g, err)
		}
	}
	// Each goroutine could have had at most one request in flight when the
	// first 401 arrived; none may start after it.
	sent := sc.count()
	if sent > 8 {
		t.Errorf("%d requests sent, want at most one per goroutine", sent)
	}
	if _, err := h.c.Account(context.Background()); err == nil {
		t.Error("Account after 401 succeeded")
	}
	if sc.count() != sent {
		t.Error("a request was sent after the key was refused")
	}
	assertNoSecrets(t, errs[0].Error())
}

func TestContextCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	sc := &script{fallback: func(w http.ResponseWriter, r *http.Request) {
		cancel()
		okBulk(w, r)
	}}
	h := newHarness(t, sc, nil)
	outs, err := h.c.UpsertContacts(ctx, "", makeContacts(250, "example.com"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := countStatus(outs); got[StatusFailed] < 150 || got[StatusSent]+got[StatusFailed] != 250 {
		t.Errorf("statuses = %v", got)
	}
}

func TestRedirectRefused(t *testing.T) {
	t.Parallel()
	var leaked sync.Mutex
	var leakedKeys []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Lock()
		leakedKeys = append(leakedKeys, r.Header.Get(apiKeyHeader))
		leaked.Unlock()
		writeJSON(w, 200, map[string]any{})
	}))
	t.Cleanup(other.Close)
	// "localhost" differs from 127.0.0.1 as a host, as another domain would.
	target := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	sc := &script{fallback: func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+"/v1/account", http.StatusFound)
	}}
	h := newHarness(t, sc, nil)
	_, err := h.c.Account(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Retryable {
		t.Fatalf("err = %v, want a permanent *APIError", err)
	}
	if sc.count() != 1 {
		t.Errorf("requests = %d, want 1 (no retry)", sc.count())
	}
	leaked.Lock()
	defer leaked.Unlock()
	if len(leakedKeys) != 0 {
		t.Errorf("redirect target received %d requests", len(leakedKeys))
	}
	if strings.Contains(err.Error(), testKey) {
		t.Errorf("error leaks key: %v", err)
	}
}

func TestGetContactNotFound(t *testing.T) {
	t.Parallel()
	sc := &script{fallback: status(404)}
	h := newHarness(t, sc, nil)
	_, err := h.c.GetContact(context.Background(), "user001@example.com")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if IsRetryable(err) {
		t.Error("404 must not be retryable")
	}
	assertNoSecrets(t, err.Error())
	if !strings.Contains(err.Error(), "u***@example.com") {
		t.Errorf("error should name the masked email: %v", err)
	}
	if sc.paths[0] != "GET /v1/contact/user001@example.com" {
		t.Errorf("path = %q", sc.paths[0])
	}
}

func TestGetContactRetriesThenGivesUp(t *testing.T) {
	t.Parallel()
	sc := &script{fallback: status(500)}
	h := newHarness(t, sc, func(o *Options) { o.MaxAttempts = 3 })
	_, err := h.c.GetContact(context.Background(), "user001@example.com")
	if !IsRetryable(err) || errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want retryable", err)
	}
	if sc.count() != 3 || h.c.Stats().Retries != 2 {
		t.Errorf("requests = %d, retries = %d", sc.count(), h.c.Stats().Retries)
	}
	assertNoSecrets(t, err.Error())
	assertNoSecrets(t, h.logs.String())
	for _, key := range []string{"status=500", "attempt=1", "wait="} {
		if !strings.Contains(h.logs.String(), key) {
			t.Errorf("log lacks %q:\n%s", key, h.logs.String())
		}
	}
}

func TestRemoveFromList(t *testing.T) {
	t.Parallel()
	lists := func(ids ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var ls []map[string]string
			for _, id := range ids {
				ls = append(ls, map[string]string{"list_id": id, "title": "VIP"})
			}
			writeJSON(w, 200, map[string]any{"lists": ls})
		}
	}
	tests := []struct {
		name     string
		answer   http.HandlerFunc
		lists    http.HandlerFunc // GET /lists, asked after a 404
		wantErr  bool
		wantGone bool
	}{
		{"member removed", status(200), nil, false, false},
		{"not a member", status(404), lists("contactlist_0", "contactlist_1"), false, false},
		{"list gone", status(404), lists("contactlist_0"), true, true},
		{"404, and the lists cannot be read", status(404), status(500), true, false},
		{"server down", status(500), nil, true, false},
		{"bad request", status(400), nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := &script{fallback: func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && tt.lists != nil {
					tt.lists(w, r)
					return
				}
				tt.answer(w, r)
			}}
			h := newHarness(t, sc, func(o *Options) { o.MaxAttempts = 2 })
			err := h.c.RemoveFromList(context.Background(), "contactlist_1", "user001@example.com")
			if (err != nil) != tt.wantErr || errors.Is(err, dest.ErrListGone) != tt.wantGone {
				t.Fatalf("err = %v, wantErr %v, wantGone %v", err, tt.wantErr, tt.wantGone)
			}
			if err != nil {
				assertNoSecrets(t, err.Error())
			}
			if sc.paths[0] != "DELETE /v1/list/contactlist_1/contact/user001@example.com" {
				t.Errorf("path = %q", sc.paths[0])
			}
		})
	}
}

func TestCustomFieldsAndAccount(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/contacts/custom_fields", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []map[string]string{{"name": "Loyalty Tier", "fieldType": "string"}})
	})
	mux.HandleFunc("GET /v1/account", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"instanceId": "abc"})
	})
	h := newHarness(t, mux, nil)
	fields, err := h.c.CustomFields(context.Background())
	if err != nil || len(fields) != 1 || fields[0] != (CustomField{Name: "Loyalty Tier", FieldType: "string"}) {
		t.Errorf("CustomFields = %v, %v", fields, err)
	}
	acct, err := h.c.Account(context.Background())
	if err != nil || acct["instanceId"] != "abc" {
		t.Errorf("Account = %v, %v", acct, err)
	}
}

func TestUpsertContact(t *testing.T) {
	t.Parallel()
	var got map[string]any
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Contact map[string]any `json:"contact"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Error(err)
		}
		got = body.Contact
		writeJSON(w, 200, map[string]string{"contact_id": "person_1"})
	}), nil)
	id, err := h.c.UpsertContact(context.Background(), "contactlist_1", Contact{Email: "a@x.com", LastName: "Lee"})
	if err != nil || id != "person_1" {
		t.Fatalf("UpsertContact = %q, %v", id, err)
	}
	if got["Email"] != "a@x.com" || got["LastName"] != "Lee" || got["_autopilot_list"] != "contactlist_1" || got["FirstName"] != nil {
		t.Errorf("sent %v", got)
	}
}

func TestAPIErrorMasksPath(t *testing.T) {
	t.Parallel()
	e := &APIError{API: "autopilot", Status: 400, Method: "GET", Path: "/contact/john@example.com", Message: "no john@example.com"}
	if got, want := e.Error(), "autopilot GET /contact/j***@example.com: status 400: no j***@example.com"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !strings.Contains((&UnauthorizedError{Status: 401}).Error(), "rotate") {
		t.Error("UnauthorizedError should tell to check or rotate the secret")
	}
}

// TestThrottlingSlowsTheSharedBudget: a 429 slows down the limiter every
// client of the budget shares, not only the request that met it.
// (Seen failing with the client not telling the limiter.)
func TestThrottlingSlowsTheSharedBudget(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	shared := pace.New(50, 1)
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			status(429)(w, r)
			return
		}
		okBulk(w, r)
	}), func(o *Options) { o.Limiter = shared })
	if _, err := h.c.UpsertContacts(context.Background(), "", []Contact{{Email: "a@x.com"}, {Email: "b@x.com"}}); err != nil {
		t.Fatal(err)
	}
	if got := shared.Rate(); got >= 50 {
		t.Fatalf("shared rate %.1f after a 429, want below the budget of 50", got)
	}
}

// An answer naming the addresses it refused costs one call more, not a
// halving down to each of them: three bad contacts among 100, named by
// the 400, take two calls in all; each reason names its own address, not
// the others'.
func TestBadContactsNamedInTheAnswerCostOneCall(t *testing.T) {
	t.Parallel()
	bad := regexp.MustCompile(`^user0(07|42|93)@`)
	var calls atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		var req struct {
			Contacts []map[string]any `json:"contacts"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Error(err)
		}
		var named []string
		for _, ct := range req.Contacts {
			if e, _ := ct["Email"].(string); bad.MatchString(e) {
				named = append(named, e)
			}
		}
		if len(named) > 0 {
			writeJSON(w, 400, map[string]string{"error": "invalid email", "message": "rejected email(s): " + strings.Join(named, ", ")})
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		okBulk(w, r)
	})
	h := newHarness(t, handler, nil)
	cs := makeContacts(100, "example.com")
	outs, err := h.c.UpsertContacts(context.Background(), "", cs)
	if err != nil {
		t.Fatal(err)
	}
	if got := countStatus(outs); got[StatusRejected] != 3 || got[StatusSent] != 97 || calls.Load() != 2 {
		t.Fatalf("statuses %v in %d calls; want 3 rejected, 97 sent, in 2 calls", got, calls.Load())
	}
	for i, o := range outs {
		if o.Status == StatusRejected && (!bad.MatchString(cs[i].Email) || o.Reason != "rejected email(s): "+cs[i].Email) {
			t.Errorf("contact %d: %+v; want only the named rejected, each reason naming its own address alone", i, o)
		}
	}
}
