package sim

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/segment"
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

// Counters tells what the simulator answered.
type Counters struct {
	Total    int                    `json:"total"`
	ByStatus map[int]int            `json:"by_status"` // 0 = no answer sent (dropped, or the client left first)
	ByRoute  map[string]map[int]int `json:"by_route"`  // "POST /contacts" -> status -> n
	// PerSecond counts requests that passed auth by whole second since the
	// first of them (since the last ResetCounters), for pacing tests.
	PerSecond []int `json:"per_second"`
	// Span is from the first to the last request that passed auth: how
	// long the sending took, as the API saw it.
	Span             time.Duration `json:"span_ns"`
	ContactsUpserted int           `json:"contacts_upserted"` // contacts applied by successful upserts
	Injected         Injected      `json:"injected"`
}

// Injected counts the requests each class of Options.Faults was injected
// into, so a fault test can check its faults happened rather than trust the
// seed. The rate limit's own 429s are not faults and are not counted.
type Injected struct {
	ServerErrors int `json:"5xx"`      // answered 500, 502 or 503
	Throttled    int `json:"429burst"` // answered 429 as part of a burst
	Dropped      int `json:"drop"`     // connection closed with no answer
	Hung         int `json:"hang"`     // applied, then answered after HangFor or left by the client
	Rejected     int `json:"reject"`   // upserts answered 400 for an email matching RejectEmails
}

// faultSet is the injected faults behind one answer; a request can both be
// rejected and hang.
type faultSet uint8

const (
	faultServerError faultSet = 1 << iota
	faultThrottle
	faultDrop
	faultHang
	faultReject
)

func (in *Injected) add(f faultSet) {
	for _, c := range []struct {
		bit faultSet
		n   *int
	}{{faultServerError, &in.ServerErrors}, {faultThrottle, &in.Throttled}, {faultDrop, &in.Dropped}, {faultHang, &in.Hung}, {faultReject, &in.Rejected}} {
		if f&c.bit != 0 {
			*c.n++
		}
	}
}

// Server is an in-memory Autopilot v1 API. It is an http.Handler and safe
// for concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	limiter   *rate.Limiter // nil when unlimited
	reject    *regexp.Regexp
	configErr error

	mu sync.Mutex // guards st
	st *store

	fmu       sync.Mutex // guards rng, jitterRng and burstLeft
	rng       *rand.Rand
	jitterRng *rand.Rand // its own stream: adding jitter leaves the other faults' draws as they were
	burstLeft int

	cmu      sync.Mutex // guards counters, first and upserted
	counters Counters
	first    time.Time
	upserted map[string]int // lower-case email -> times applied; see Upserted
}

// New returns a Server with empty state. An invalid Options.Faults (which
// ParseFaults never produces) makes every request answer 500 naming the
// problem, since New has no error to return.
func New(opts Options) *Server {
	if opts.Faults.ThrottleBurstLen == 0 {
		opts.Faults.ThrottleBurstLen = defaultBurstLen
	}
	if opts.Faults.HangFor == 0 {
		opts.Faults.HangFor = defaultHangFor
	}
	s := &Server{
		opts: opts,
		log:  opts.Logger,
		st:   newStore(),
		// Two words of the seed keep runs with the same seed identical.
		rng:       rand.New(rand.NewPCG(uint64(opts.Seed), uint64(opts.Seed)^0x9e3779b97f4a7c15)),
		jitterRng: rand.New(rand.NewPCG(uint64(opts.Seed)^0x6a09e667f3bcc908, uint64(opts.Seed))),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.counters = newCounters()
	s.upserted = map[string]int{}
	if opts.RequestsPerSecond > 0 {
		burst := opts.Burst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(opts.RequestsPerSecond)))
		}
		s.limiter = rate.NewLimiter(rate.Limit(opts.RequestsPerSecond), burst)
	}
	if err := opts.Faults.Validate(); err != nil {
		s.configErr = err
		s.log.Error("simulator misconfigured", "err", err)
	} else if opts.Faults.RejectEmails != "" {
		s.reject = regexp.MustCompile(opts.Faults.RejectEmails) // Validate compiled it already
	}
	return s
}

func newCounters() Counters {
	return Counters{ByStatus: map[int]int{}, ByRoute: map[string]map[int]int{}, PerSecond: []int{}}
}

// faultDraw is one request's fault outcome.
type faultDraw struct {
	throttle bool
	drop     bool
	status5  int // 0 or 500/502/503
	hang     bool
}

// draw decides a request's faults. It always consumes the same number of
// random values so request n gets the same outcome under a seed whatever
// happened before.
func (s *Server) draw() faultDraw {
	f := s.opts.Faults
	s.fmu.Lock()
	defer s.fmu.Unlock()
	burst, drop, fail, code, hang := s.rng.Float64(), s.rng.Float64(), s.rng.Float64(), s.rng.IntN(3), s.rng.Float64()
	var d faultDraw
	switch {
	case s.burstLeft > 0:
		s.burstLeft--
		d.throttle = true
	case burst < f.ThrottleBurstRate:
		s.burstLeft = f.ThrottleBurstLen - 1
		d.throttle = true
	}
	d.drop = drop < f.DropRate
	if fail < f.ServerErrorRate {
		d.status5 = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[code]
	}
	d.hang = hang < f.HangRate
	return d
}

// answer is what a handler produced; the Server writes it.
type answer struct {
	status int
	body   any
	header http.Header
	// upserted holds the emails of the contacts applied, for Counters and
	// Upserted.
	upserted []string
	faults   faultSet
}

func errAnswer(e *apiError) answer {
	return answer{status: e.status, body: map[string]string{"error": e.code, "message": e.msg}, faults: e.faults}
}

func errorf(status int, code, format string, args ...any) answer {
	return errAnswer(&apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)})
}

func ok(body any) answer { return answer{status: http.StatusOK, body: body} }

// ServeHTTP answers one Autopilot API request. Checks run in this order:
// latency, auth, rate limit, faults, then the route's handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt, params, allowed := match(r)
	name := "unknown"
	if rt != nil {
		name = rt.name
	} else if allowed != "" {
		name = r.Method + " " + allowed
	}
	a, authed := s.serve(w, r, rt, params, allowed)
	// Record before answering, so a client that has its answer always finds
	// it in Counters.
	s.record(start, name, a, authed)
	if a.status != 0 {
		s.write(w, a)
	}
	s.log.Debug("request", "route", name, "status", a.status, "took", time.Since(start))
}

// serve returns the answer to send (status 0 = none: dropped, hung or
// abandoned) and whether the request passed auth.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt *route, params map[string]string, allowed string) (answer, bool) {
	ctx := r.Context()
	if s.configErr != nil {
		return errorf(http.StatusInternalServerError, "simulator misconfigured", "%v", s.configErr), false
	}
	if clock.Sleep(ctx, s.opts.Faults.Latency+s.jitter()) != nil {
		return answer{}, false
	}
	key := r.Header.Get("autopilotapikey")
	switch {
	case key == "":
		return errorf(http.StatusBadRequest, "no key provided", "no key provided: send the autopilotapikey header"), false
	case s.opts.APIKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.opts.APIKey)) != 1:
		return errorf(http.StatusUnauthorized, "unauthorized", "the API key is not valid"), false
	}
	if a, limited := s.rateLimit(); limited {
		return a, true
	}
	d := s.draw()
	if d.throttle {
		a := s.tooMany(time.Second)
		a.faults = faultThrottle
		return a, true
	}
	if d.drop {
		a := s.drop(w)
		a.faults = faultDrop
		return a, true
	}
	if d.status5 != 0 {
		a := errorf(d.status5, http.StatusText(d.status5), "injected fault")
		a.faults = faultServerError
		return a, true
	}
	var a answer
	switch {
	case rt != nil:
		a = rt.handle(s, r, params)
	case allowed != "":
		a = errorf(http.StatusMethodNotAllowed, "method not allowed", "%s is not allowed on %s", r.Method, allowed)
	default:
		a = errorf(http.StatusNotFound, "not found", "no such route: %s %s", r.Method, r.URL.Path)
	}
	if d.hang {
		a.faults |= faultHang
		if clock.Sleep(ctx, s.opts.Faults.HangFor) != nil {
			a.status = 0
		}
	}
	return a, true
}

// jitter draws this request's network delay.
func (s *Server) jitter() time.Duration {
	if s.opts.Faults.Jitter <= 0 {
		return 0
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return time.Duration(s.jitterRng.Int64N(int64(s.opts.Faults.Jitter)))
}

// rateLimit takes a token, or answers 429 when the bucket is empty.
func (s *Server) rateLimit() (answer, bool) {
	if s.limiter == nil {
		return answer{}, false
	}
	res := s.limiter.Reserve()
	delay := res.Delay()
	if delay == 0 {
		return answer{}, false
	}
	// Give the token back: a rejected request must not push later ones out.
	res.Cancel()
	return s.tooMany(delay), true
}

func (s *Server) tooMany(delay time.Duration) answer {
	a := errorf(http.StatusTooManyRequests, "too many requests", "rate limit exceeded")
	if s.opts.RetryAfter {
		secs := max(1, int(math.Ceil(delay.Seconds())))
		a.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	}
	return a
}

// drop closes the connection without an answer.
func (s *Server) drop(w http.ResponseWriter) answer {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 and recorders cannot be hijacked; ErrAbortHandler is
		// net/http's documented way to abort a response without logging.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		s.log.Warn("dropping connection", "err", err)
		panic(http.ErrAbortHandler)
	}
	if err := conn.Close(); err != nil {
		s.log.Debug("closing dropped connection", "err", err)
	}
	return answer{}
}

func (s *Server) write(w http.ResponseWriter, a answer) {
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	if err := json.NewEncoder(w).Encode(a.body); err != nil {
		// The client has gone; the answer was still decided.
		s.log.Debug("writing answer", "err", err)
	}
}

func (s *Server) record(start time.Time, route string, a answer, authed bool) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	c := &s.counters
	c.Total++
	c.ByStatus[a.status]++
	if c.ByRoute[route] == nil {
		c.ByRoute[route] = map[int]int{}
	}
	c.ByRoute[route][a.status]++
	// Handlers set upserted only on success; a hung answer still counts.
	c.ContactsUpserted += len(a.upserted)
	c.Injected.add(a.faults)
	for _, e := range a.upserted {
		s.upserted[emailKey(e)]++
	}
	if authed {
		if s.first.IsZero() {
			s.first = start
		}
		// A concurrent request may have started just before the first one
		// recorded; it belongs to second 0.
		sec := max(0, int(start.Sub(s.first)/time.Second))
		for len(c.PerSecond) <= sec {
			c.PerSecond = append(c.PerSecond, 0)
		}
		c.PerSecond[sec]++
		c.Span = max(c.Span, start.Sub(s.first))
	}
}

// Counters returns a copy of the request counters.
func (s *Server) Counters() Counters {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	out := Counters{
		Total:            s.counters.Total,
		ByStatus:         make(map[int]int, len(s.counters.ByStatus)),
		ByRoute:          make(map[string]map[int]int, len(s.counters.ByRoute)),
		PerSecond:        append([]int{}, s.counters.PerSecond...),
		ContactsUpserted: s.counters.ContactsUpserted,
		Injected:         s.counters.Injected,
		Span:             s.counters.Span,
	}
	for k, v := range s.counters.ByStatus {
		out.ByStatus[k] = v
	}
	for route, m := range s.counters.ByRoute {
		out.ByRoute[route] = make(map[int]int, len(m))
		for k, v := range m {
			out.ByRoute[route][k] = v
		}
	}
	return out
}

// ResetCounters zeroes the counters and Upserted; PerSecond restarts at
// the next request.
func (s *Server) ResetCounters() {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	s.counters = newCounters()
	s.first = time.Time{}
	s.upserted = map[string]int{}
}

// Upserted tells which contacts upserts applied since New or the last
// ResetCounters: lower-case email -> how many times. A delta test compares
// it with the contacts that should have gone out, exactly.
func (s *Server) Upserted() map[string]int {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return maps.Clone(s.upserted)
}

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
