// Package sim is an in-memory simulator of the Ortto API v1 (the contract
// in shared/ortto-api.md), used by `segpilot sim --kind ortto`, local runs,
// tests and benchmarks. Its fault injection, rate limit and counters are
// shared/simkit's, the same as Autopilot's simulator.
//
// Behaviour worth knowing:
//   - Every call is a POST under /v1/. Auth: header X-Api-Key; missing or
//     unknown → 401; a key of an account in another region (OtherRegions)
//     → 401 naming that region's host, as a key works only on its own.
//     Refused requests use no rate budget.
//   - The rate limit answers 429 with the wait in the JSON body and no
//     header: {"error": {"code": "rate-limit", "message": "rate limit",
//     "try-in-seconds": N}}. Other errors are {"error": {"code", "message"}}.
//   - POST /v1/person/merge, synchronous only (async: true answers 400;
//     segpilot needs per-person outcomes), merge_by ["str::email"] only.
//     The whole call is refused (400, nothing applied) for: no people or
//     more than 100, an unknown field or a custom field that does not
//     exist, a value of the wrong type, one tag both set and unset, a body
//     over 2 MB (413). Otherwise each person gets an entry, in order:
//     {"person_id", "status": "created" | "merged"}, "ignored" (an
//     existing person under merge_strategy 3, or an unknown one under
//     skip_non_existing), {"status": "suppressed", "error": "Email is
//     suppressed"} for a new person whose address is suppressed (with
//     suppression_list_field_id "str::email"), or {"status": "error",
//     "error"} for a person without a valid email, or a new one matching
//     the fault spec's reject=.
//   - Subscription, exactly as Ortto: a new person without bol::p is
//     subscribed (and without bol::sp not to SMS); bol::p or bol::sp sent
//     sets it, so "bol::p": true re-subscribes someone who opted out.
//   - merge_strategy 1 fills empty fields only, 2 (default) overwrites the
//     fields sent (null clears), 3 leaves existing people alone. tags are
//     added, unset_tags removed (no effect when absent).
//   - POST /v1/person/custom-field/get lists the custom fields;
//     /custom-field/create {"name", "type"} makes one with the id
//     TYP:cm:kebab-name (type text, long_text, integer, decimal, currency,
//     boolean or date); a duplicate name or a 101st field answers 400.
//   - Person ids come from a counter, so runs are reproducible.
package sim

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/simkit"
)

// Hosts are Ortto's API hosts by region, for messages.
var Hosts = map[string]string{"global": "https://api.ap3api.com", "au": "https://api.au.ap3api.com", "eu": "https://api.eu.ap3api.com"}

// Options configures a Server.
type Options struct {
	APIKey string // the one valid key of this region; empty accepts any other non-empty key
	Region string // the region this host serves: global (default), au or eu
	// OtherRegions are keys of accounts in other regions (key -> region):
	// refused here with 401, as Ortto does.
	OtherRegions      map[string]string
	RequestsPerSecond float64 // the key's token bucket; 0 = unlimited
	Burst             int     // bucket size; default max(1, ceil(RequestsPerSecond))
	Faults            simkit.Faults
	Seed              int64 // faults are deterministic for a given seed and request order
	Logger            *slog.Logger
}

// Server is an in-memory Ortto API. It is an http.Handler and safe for
// concurrent use.
type Server struct {
	opts Options
	kit  *simkit.Kit

	mu sync.Mutex // guards st
	st *store
}

// New returns a Server with empty state.
func New(opts Options) *Server {
	if opts.Region == "" {
		opts.Region = "global"
	}
	s := &Server{opts: opts, st: newStore()}
	s.kit = simkit.New(simkit.Options{
		RequestsPerSecond: opts.RequestsPerSecond, Burst: opts.Burst, Faults: opts.Faults, Seed: opts.Seed, Logger: opts.Logger,
		Error: errorAnswer,
		TooMany: func(wait time.Duration) simkit.Answer {
			return simkit.Answer{Status: http.StatusTooManyRequests, Body: map[string]any{"error": map[string]any{
				"code": "rate-limit", "message": "rate limit", "try-in-seconds": max(1, int(math.Ceil(wait.Seconds()))),
			}}}
		},
	})
	return s
}

func errorAnswer(status int, code, msg string) simkit.Answer {
	return simkit.Answer{Status: status, Body: map[string]any{"error": map[string]string{"code": code, "message": msg}}}
}

func badRequest(format string, args ...any) simkit.Answer {
	return errorAnswer(http.StatusBadRequest, "bad-request", fmt.Sprintf(format, args...))
}

type route func(s *Server, body []byte) simkit.Answer

var routes = map[string]route{
	"/v1/person/merge":               (*Server).merge,
	"/v1/person/custom-field/get":    (*Server).fields,
	"/v1/person/custom-field/create": (*Server).createField,
}

// maxPayload is Ortto's limit per request body.
const maxPayload = 2 << 20

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := "/" + strings.Trim(r.URL.Path, "/")
	rt, known := routes[path]
	name := r.Method + " " + strings.TrimPrefix(path, "/v1")
	s.kit.Serve(w, r, name, s.auth, func() simkit.Answer {
		switch {
		case !known && !strings.HasPrefix(path, "/v1/"):
			return errorAnswer(http.StatusNotFound, "not-found", "unknown endpoint "+path+": every path is under /v1/")
		case !known:
			return errorAnswer(http.StatusNotFound, "not-found", "unknown endpoint "+path)
		case r.Method != http.MethodPost:
			return errorAnswer(http.StatusMethodNotAllowed, "method-not-allowed", r.Method+" is not allowed on "+path+": use POST")
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
		switch {
		case err != nil:
			return badRequest("reading body: %v", err)
		case len(body) > maxPayload:
			return errorAnswer(http.StatusRequestEntityTooLarge, "payload-too-large", fmt.Sprintf("the payload exceeds %d bytes", maxPayload))
		}
		return rt(s, body)
	})
}

// auth checks the X-Api-Key header.
func (s *Server) auth(r *http.Request) (simkit.Answer, bool) {
	key := r.Header.Get("X-Api-Key")
	refused := func(msg string) (simkit.Answer, bool) {
		return errorAnswer(http.StatusUnauthorized, "unauthorized", msg), false
	}
	if key == "" {
		return refused("no API key: send the X-Api-Key header")
	}
	if region, ok := s.opts.OtherRegions[key]; ok && region != s.opts.Region {
		return refused(fmt.Sprintf("this API key belongs to an account in the %s region: send it to %s (this is the %s region's host)",
			region, Hosts[region], s.opts.Region))
	}
	if s.opts.APIKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.opts.APIKey)) != 1 {
		return refused("the API key is not valid")
	}
	return simkit.Answer{}, true
}

// Counters returns a copy of the request counters.
func (s *Server) Counters() simkit.Counters { return s.kit.Counters() }

// ResetCounters zeroes the counters and Upserted.
func (s *Server) ResetCounters() { s.kit.ResetCounters() }

// Upserted tells which people merges created or updated since New or the
// last ResetCounters: lower-case email -> how many times.
func (s *Server) Upserted() map[string]int { return s.kit.Upserted() }

// Dump returns a deep copy of the state in a deterministic order.
func (s *Server) Dump() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.dump()
}

// Load replaces the state with a Dump; counters are untouched.
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

// Unsubscribe sets a person's email permission to false, as if they
// clicked the unsubscribe link.
func (s *Server) Unsubscribe(email string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.byEmail[simkit.EmailKey(email)]
	if p == nil {
		return fmt.Errorf("unsubscribing %s: no such person", segment.MaskEmail(email))
	}
	p.subscribed = false
	return nil
}

// Tag gives the person with email a tag, creating the person when absent
// (someone tagged by hand in Ortto).
func (s *Server) Tag(email, tag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.byEmail[simkit.EmailKey(email)]
	if p == nil {
		p = s.st.create(email)
	}
	p.tags[tag] = true
}

// Suppress puts an address on the account's email suppression list.
func (s *Server) Suppress(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.suppressed[simkit.EmailKey(email)] = true
}

// CreateField makes a custom field, as someone would in Ortto's settings;
// displayType is one of text, long_text, integer, decimal, currency,
// boolean, date.
func (s *Server) CreateField(name, displayType string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.st.createField(name, displayType)
	if err != nil {
		return "", err
	}
	return f.ID, nil
}

// State is a deep copy of everything the simulator holds.
type State struct {
	People     []Person `json:"people"`               // sorted by email
	Fields     []Field  `json:"fields"`               // custom fields, sorted by id
	Suppressed []string `json:"suppressed,omitempty"` // lower-case emails, sorted
}

// Person is one stored person.
type Person struct {
	ID    string `json:"person_id"`
	Email string `json:"email"` // as first given
	// Fields holds every field but str::email, bol::p and bol::sp, as
	// decoded JSON (numbers as float64, dates as objects).
	Fields        map[string]any `json:"fields"`
	Tags          []string       `json:"tags"`           // sorted
	Subscribed    bool           `json:"subscribed"`     // bol::p, the email permission
	SMSSubscribed bool           `json:"sms_subscribed"` // bol::sp
}

// Field is one custom field.
type Field struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DisplayType string `json:"display_type"`
}

// Tagged returns the emails of the people with tag, sorted.
func (st State) Tagged(tag string) []string {
	var out []string
	for _, p := range st.People {
		if slices.Contains(p.Tags, tag) {
			out = append(out, p.Email)
		}
	}
	return out
}

// Simulator builds a Server (the global region) from the registry's Config.
func Simulator(c simkit.Config) simkit.Simulator {
	return New(Options{APIKey: c.APIKey, RequestsPerSecond: c.RequestsPerSecond, Burst: c.Burst, Faults: c.Faults, Seed: c.Seed, Logger: c.Logger})
}

// LoadJSON replaces the state with a DumpJSON's.
func (s *Server) LoadJSON(raw []byte) error {
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decoding simulator state: %w", err)
	}
	return s.Load(st)
}
