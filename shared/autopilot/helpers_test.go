package autopilot

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/testutil"
)

const testKey = "KEY-SECRET-123"

// script answers the n-th request with steps[n], then with fallback.
type script struct {
	mu       sync.Mutex
	steps    []http.HandlerFunc
	fallback http.HandlerFunc
	n        int
	keys     []string // autopilotapikey header of every request
	paths    []string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := s.n
	s.n++
	s.keys = append(s.keys, r.Header.Get(apiKeyHeader))
	s.paths = append(s.paths, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	if i < len(s.steps) {
		s.steps[i](w, r)
		return
	}
	s.fallback(w, r)
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// okBulk answers a bulk upsert with one id per contact.
func okBulk(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Contacts []map[string]any `json:"contacts"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"message":"bad json"}`, http.StatusBadRequest)
		return
	}
	ids := make([]string, len(body.Contacts))
	for i, ct := range body.Contacts {
		ids[i] = fmt.Sprintf("person_%v", ct["Email"])
	}
	writeJSON(w, http.StatusOK, map[string]any{"contact_ids": ids})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		panic(err) // only reachable if the test's own value cannot be encoded
	}
}

func status(code int, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		writeJSON(w, code, map[string]string{"error": http.StatusText(code), "message": fmt.Sprintf("answer %d", code)})
	}
}

// drop closes the connection without answering.
func drop(w http.ResponseWriter, r *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	conn.Close()
}

// hang answers nothing until the client gives up. The body is drained first:
// the server notices a client leaving only once the body has been read.
func hang(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		return
	}
	<-r.Context().Done()
}

// harness is a Client against a handler with recorded sleeps and logs.
type harness struct {
	c      *Client
	srv    *httptest.Server
	logs   *testutil.SyncBuffer
	mu     sync.Mutex
	sleeps []time.Duration
}

func (h *harness) slept() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.sleeps...)
}

func newHarness(t *testing.T, handler http.Handler, mod func(*Options)) *harness {
	t.Helper()
	h := &harness{logs: &testutil.SyncBuffer{}}
	h.srv = httptest.NewServer(handler)
	t.Cleanup(h.srv.Close)
	opts := Options{
		BaseURL:           h.srv.URL + "/v1/",
		APIKey:            testKey,
		RequestsPerSecond: 10000,
		Burst:             100,
		Timeout:           5 * time.Second,
		Logger:            slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		sleep: func(ctx context.Context, d time.Duration) error {
			h.mu.Lock()
			h.sleeps = append(h.sleeps, d)
			h.mu.Unlock()
			return ctx.Err()
		},
	}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.c = c
	return h
}

func makeContacts(n int, domain string) []Contact {
	cs := make([]Contact, n)
	for i := range cs {
		cs[i] = Contact{Email: fmt.Sprintf("user%03d@%s", i, domain), FirstName: "F", Custom: map[string]any{"string--Tier": "gold"}}
	}
	return cs
}

func countStatus(outs []Outcome) map[Status]int {
	m := map[Status]int{}
	for _, o := range outs {
		m[o.Status]++
	}
	return m
}
