package sim

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/simkit"
)

// Options configures a Server.
type Options struct {
	APIKey            string  // the one valid key; empty accepts any non-empty key
	RequestsPerSecond float64 // the key's token bucket; 0 = unlimited
	Burst             int     // bucket size; default max(1, ceil(RequestsPerSecond))
	RetryAfter        bool    // 429 answers carry Retry-After (whole seconds, >= 1)
	Faults            Faults
	Seed              int64        // faults are deterministic for a given seed and request order
	Logger            *slog.Logger // optional
}

// Faults configures the failures the simulator injects (shared/simkit).
type Faults = simkit.Faults

// ParseFaults reads a fault spec (shared/simkit).
func ParseFaults(spec string) (Faults, error) { return simkit.ParseFaults(spec) }

// Counters tells what the simulator answered (shared/simkit).
type Counters = simkit.Counters

// Injected counts the requests each fault class was injected into.
type Injected = simkit.Injected

// Server is an in-memory Autopilot v1 API. It is an http.Handler and safe
// for concurrent use.
type Server struct {
	opts Options
	kit  *simkit.Kit

	mu sync.Mutex // guards st
	st *store
}

// New returns a Server with empty state. An invalid Options.Faults (which
// ParseFaults never produces) makes every request answer 500 naming the
// problem, since New has no error to return.
func New(opts Options) *Server {
	s := &Server{opts: opts, st: newStore()}
	s.kit = simkit.New(simkit.Options{
		RequestsPerSecond: opts.RequestsPerSecond, Burst: opts.Burst, Faults: opts.Faults, Seed: opts.Seed, Logger: opts.Logger,
		Error:   func(status int, code, msg string) simkit.Answer { return errorf(status, code, "%s", msg).kit() },
		TooMany: func(wait time.Duration) simkit.Answer { return s.tooMany(wait).kit() },
	})
	return s
}

// answer is what a handler produced; the kit writes it.
type answer struct {
	status int
	body   any
	header http.Header
	// upserted holds the emails of the contacts applied, for Counters and
	// Upserted.
	upserted []string
	faults   simkit.FaultSet
}

func (a answer) kit() simkit.Answer {
	return simkit.Answer{Status: a.status, Body: a.body, Header: a.header, Upserted: a.upserted, Faults: a.faults}
}

func errAnswer(e *apiError) answer {
	return answer{status: e.status, body: map[string]string{"error": e.code, "message": e.msg}, faults: e.faults}
}

func errorf(status int, code, format string, args ...any) answer {
	return errAnswer(&apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)})
}

func ok(body any) answer { return answer{status: http.StatusOK, body: body} }

// ServeHTTP answers one Autopilot API request: the kit's latency, then
// auth, the kit's rate limit and faults, then the route's handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, params, allowed := match(r)
	name := "unknown"
	if rt != nil {
		name = rt.name
	} else if allowed != "" {
		name = r.Method + " " + allowed
	}
	s.kit.Serve(w, r, name, s.auth, func() simkit.Answer {
		switch {
		case rt != nil:
			return rt.handle(s, r, params).kit()
		case allowed != "":
			return errorf(http.StatusMethodNotAllowed, "method not allowed", "%s is not allowed on %s", r.Method, allowed).kit()
		case !underAPIPath(r.URL):
			return errorf(http.StatusNotFound, "not found", "no such route: %s %s: every path is under /v1/", r.Method, r.URL.Path).kit()
		default:
			return errorf(http.StatusNotFound, "not found", "no such route: %s %s", r.Method, r.URL.Path).kit()
		}
	})
}

// auth checks the autopilotapikey header; a refused request uses no rate
// budget.
func (s *Server) auth(r *http.Request) (simkit.Answer, bool) {
	key := r.Header.Get("autopilotapikey")
	switch {
	case key == "":
		return errorf(http.StatusBadRequest, "no key provided", "no key provided: send the autopilotapikey header").kit(), false
	case s.opts.APIKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.opts.APIKey)) != 1:
		return errorf(http.StatusUnauthorized, "unauthorized", "the API key is not valid").kit(), false
	}
	return simkit.Answer{}, true
}

func (s *Server) tooMany(delay time.Duration) answer {
	a := errorf(http.StatusTooManyRequests, "too many requests", "rate limit exceeded")
	if s.opts.RetryAfter {
		secs := max(1, int(math.Ceil(delay.Seconds())))
		a.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	}
	return a
}

// Counters returns a copy of the request counters.
func (s *Server) Counters() Counters { return s.kit.Counters() }

// ResetCounters zeroes the counters and Upserted; PerSecond restarts at
// the next request.
func (s *Server) ResetCounters() { s.kit.ResetCounters() }

// Upserted tells which contacts upserts applied since New or the last
// ResetCounters: lower-case email -> how many times. A delta test compares
// it with the contacts that should have gone out, exactly.
func (s *Server) Upserted() map[string]int { return s.kit.Upserted() }

// Dump returns a deep copy of the state in a deterministic order.
func (s *Server) Dump() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.dump()
}

// Load replaces the simulator's state with a Dump (for example one saved by
// an earlier process); counters are untouched.
func (s *Server) Load(st State) error {
	loaded, err := load(st)
	if err != nil {
		return fmt.Errorf("loading simulator state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = loaded
	return nil
}

// DumpJSON returns Dump as indented JSON.
func (s *Server) DumpJSON() ([]byte, error) {
	b, err := json.MarshalIndent(s.Dump(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding simulator state: %w", err)
	}
	return b, nil
}

// Unsubscribe marks a contact unsubscribed, as if they clicked the link.
func (s *Server) Unsubscribe(email string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.lookup(email)
	if c == nil {
		return fmt.Errorf("unsubscribing %s: contact %w", segment.MaskEmail(email), ErrNotFound)
	}
	c.unsubscribed = true
	return nil
}

// CreateList creates a list and returns its id.
func (s *Server) CreateList(title string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.createList(title)
}

// DeleteList deletes a list, as someone might by hand in Autopilot's app;
// its contacts stay.
func (s *Server) DeleteList(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.lists[id] == nil {
		return fmt.Errorf("deleting list %s: list %w", id, ErrNotFound)
	}
	s.st.deleteList(id)
	return nil
}

// AddToList makes the contact with email a member of the list, creating
// the contact when absent.
func (s *Server) AddToList(listID, email string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.st.lists[listID]
	if l == nil {
		return fmt.Errorf("adding to list %s: list %w", listID, ErrNotFound)
	}
	c := s.st.lookup(email)
	if c == nil {
		c = s.st.create(email)
	}
	s.st.addMember(l, c)
	return nil
}

// Simulator builds a Server from the registry's Config.
func Simulator(c simkit.Config) simkit.Simulator {
	return New(Options{APIKey: c.APIKey, RequestsPerSecond: c.RequestsPerSecond, Burst: c.Burst, RetryAfter: !c.NoRetryHint,
		Faults: c.Faults, Seed: c.Seed, Logger: c.Logger})
}

// LoadJSON replaces the state with a DumpJSON's.
func (s *Server) LoadJSON(raw []byte) error {
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decoding simulator state: %w", err)
	}
	return s.Load(st)
}
