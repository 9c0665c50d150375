// Package simkit is what every destination simulator shares: the fault
// injection (deterministic under a seed), the per-key rate limit, the
// counters tests and benchmarks read, and the order of checks. A simulator
// (shared/autopilot/sim, shared/ortto/sim) adds its auth, its routes and
// its state, and says how its API words an error and a 429.
//
// Checks run in this order: latency and jitter, the simulator's auth, the
// rate limit (one token bucket), the injected faults (429 bursts, dropped
// connections, 5xx), the route, then a hang. See ParseFaults for the spec.
package simkit

import (
	"encoding/json"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/clock"
)

// Options configures a Kit.
type Options struct {
	RequestsPerSecond float64 // the key's token bucket; 0 = unlimited
	Burst             int     // bucket size; default max(1, ceil(RequestsPerSecond))
	Faults            Faults
	Seed              int64        // faults are deterministic for a given seed and request order
	Logger            *slog.Logger // optional
	// Error is the API's error answer (status, short code, message).
	Error func(status int, code, msg string) Answer
	// TooMany is the API's 429 answer; wait is when the bucket has a token.
	TooMany func(wait time.Duration) Answer
}

// Answer is what a route produced; the Kit writes it as JSON.
type Answer struct {
	Status int // 0: no answer (dropped, hung past the client, abandoned)
	Body   any
	Header http.Header
	// Upserted holds the emails of the contacts applied, for Counters and
	// Upserted.
	Upserted []string
	Faults   FaultSet // the injected faults behind the answer
}

// OK is a 200 answer.
func OK(body any) Answer { return Answer{Status: http.StatusOK, Body: body} }

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
	Rejected     int `json:"reject"`   // contacts refused for an email matching RejectEmails
}

// FaultSet is the injected faults behind one answer; a request can both be
// rejected and hang.
type FaultSet uint8

// The fault classes, as Injected counts them.
const (
	FaultServerError FaultSet = 1 << iota
	FaultThrottle
	FaultDrop
	FaultHang
	FaultReject
)

func (in *Injected) add(f FaultSet) {
	for _, c := range []struct {
		bit FaultSet
		n   *int
	}{{FaultServerError, &in.ServerErrors}, {FaultThrottle, &in.Throttled}, {FaultDrop, &in.Dropped}, {FaultHang, &in.Hung}, {FaultReject, &in.Rejected}} {
		if f&c.bit != 0 {
			*c.n++
		}
	}
}

// Kit serves requests for one simulator. It is safe for concurrent use.
type Kit struct {
	opts      Options
	log       *slog.Logger
	limiter   *rate.Limiter // nil when unlimited
	reject    *regexp.Regexp
	configErr error

	fmu       sync.Mutex // guards rng, jitterRng and burstLeft
	rng       *rand.Rand
	jitterRng *rand.Rand // its own stream: adding jitter leaves the other faults' draws as they were
	burstLeft int

	cmu      sync.Mutex // guards counters, first and upserted
	counters Counters
	first    time.Time
	upserted map[string]int // lower-case email -> times applied; see Upserted
}

// New returns a Kit. An invalid Options.Faults (which ParseFaults never
// produces) makes every request answer 500 naming the problem.
func New(opts Options) *Kit {
	if opts.Faults.ThrottleBurstLen == 0 {
		opts.Faults.ThrottleBurstLen = defaultBurstLen
	}
	if opts.Faults.HangFor == 0 {
		opts.Faults.HangFor = defaultHangFor
	}
	k := &Kit{
		opts: opts,
		log:  opts.Logger,
		// Two words of the seed keep runs with the same seed identical.
		rng:       rand.New(rand.NewPCG(uint64(opts.Seed), uint64(opts.Seed)^0x9e3779b97f4a7c15)),
		jitterRng: rand.New(rand.NewPCG(uint64(opts.Seed)^0x6a09e667f3bcc908, uint64(opts.Seed))),
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	k.counters = newCounters()
	k.upserted = map[string]int{}
	if opts.RequestsPerSecond > 0 {
		burst := opts.Burst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(opts.RequestsPerSecond)))
		}
		k.limiter = rate.NewLimiter(rate.Limit(opts.RequestsPerSecond), burst)
	}
	if err := opts.Faults.Validate(); err != nil {
		k.configErr = err
		k.log.Error("simulator misconfigured", "err", err)
	} else if opts.Faults.RejectEmails != "" {
		k.reject = regexp.MustCompile(opts.Faults.RejectEmails) // Validate compiled it already
	}
	return k
}

func newCounters() Counters {
	return Counters{ByStatus: map[int]int{}, ByRoute: map[string]map[int]int{}, PerSecond: []int{}}
}

// Rejects reports whether the fault spec's reject= matches email.
func (k *Kit) Rejects(email string) bool { return k.reject != nil && k.reject.MatchString(email) }

// Serve answers one request under route (the Counters key): auth returns
// the answer refusing the request, or ok; handle answers a request that
// passed auth, the rate limit and the faults.
func (k *Kit) Serve(w http.ResponseWriter, r *http.Request, route string, auth func(*http.Request) (Answer, bool), handle func() Answer) {
	start := time.Now()
	a, authed := k.serve(w, r, auth, handle)
	// Record before answering, so a client that has its answer always finds
	// it in Counters.
	k.record(start, route, a, authed)
	if a.Status != 0 {
		k.write(w, a)
	}
	k.log.Debug("request", "route", route, "status", a.Status, "took", time.Since(start))
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
func (k *Kit) draw() faultDraw {
	f := k.opts.Faults
	k.fmu.Lock()
	defer k.fmu.Unlock()
	burst, drop, fail, code, hang := k.rng.Float64(), k.rng.Float64(), k.rng.Float64(), k.rng.IntN(3), k.rng.Float64()
	var d faultDraw
	switch {
	case k.burstLeft > 0:
		k.burstLeft--
		d.throttle = true
	case burst < f.ThrottleBurstRate:
		k.burstLeft = f.ThrottleBurstLen - 1
		d.throttle = true
	}
	d.drop = drop < f.DropRate
	if fail < f.ServerErrorRate {
		d.status5 = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[code]
	}
	d.hang = hang < f.HangRate
	return d
}

// serve returns the answer to send (status 0 = none: dropped, hung or
// abandoned) and whether the request passed auth.
func (k *Kit) serve(w http.ResponseWriter, r *http.Request, auth func(*http.Request) (Answer, bool), handle func() Answer) (Answer, bool) {
	ctx := r.Context()
	if k.configErr != nil {
		return k.opts.Error(http.StatusInternalServerError, "simulator misconfigured", k.configErr.Error()), false
	}
	if clock.Sleep(ctx, k.opts.Faults.Latency+k.jitter()) != nil {
		return Answer{}, false
	}
	if a, ok := auth(r); !ok {
		return a, false
	}
	if a, limited := k.rateLimit(); limited {
		return a, true
	}
	d := k.draw()
	if d.throttle {
		a := k.opts.TooMany(time.Second)
		a.Faults = FaultThrottle
		return a, true
	}
	if d.drop {
		a := k.drop(w)
		a.Faults = FaultDrop
		return a, true
	}
	if d.status5 != 0 {
		a := k.opts.Error(d.status5, http.StatusText(d.status5), "injected fault")
		a.Faults = FaultServerError
		return a, true
	}
	a := handle()
	if d.hang {
		a.Faults |= FaultHang
		if clock.Sleep(ctx, k.opts.Faults.HangFor) != nil {
			a.Status = 0
		}
	}
	return a, true
}

// jitter draws this request's network delay.
func (k *Kit) jitter() time.Duration {
	if k.opts.Faults.Jitter <= 0 {
		return 0
	}
	k.fmu.Lock()
	defer k.fmu.Unlock()
	return time.Duration(k.jitterRng.Int64N(int64(k.opts.Faults.Jitter)))
}

// rateLimit takes a token, or answers 429 when the bucket is empty.
func (k *Kit) rateLimit() (Answer, bool) {
	if k.limiter == nil {
		return Answer{}, false
	}
	res := k.limiter.Reserve()
	delay := res.Delay()
	if delay == 0 {
		return Answer{}, false
	}
	// Give the token back: a rejected request must not push later ones out.
	res.Cancel()
	return k.opts.TooMany(delay), true
}

// drop closes the connection without an answer.
func (k *Kit) drop(w http.ResponseWriter) Answer {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 and recorders cannot be hijacked; ErrAbortHandler is
		// net/http's documented way to abort a response without logging.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		k.log.Warn("dropping connection", "err", err)
		panic(http.ErrAbortHandler)
	}
	if err := conn.Close(); err != nil {
		k.log.Debug("closing dropped connection", "err", err)
	}
	return Answer{}
}

func (k *Kit) write(w http.ResponseWriter, a Answer) {
	for key, v := range a.Header {
		w.Header()[key] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.Status)
	if err := json.NewEncoder(w).Encode(a.Body); err != nil {
		// The client has gone; the answer was still decided.
		k.log.Debug("writing answer", "err", err)
	}
}

func (k *Kit) record(start time.Time, route string, a Answer, authed bool) {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	c := &k.counters
	c.Total++
	c.ByStatus[a.Status]++
	if c.ByRoute[route] == nil {
		c.ByRoute[route] = map[int]int{}
	}
	c.ByRoute[route][a.Status]++
	// Routes set Upserted only on success; a hung answer still counts.
	c.ContactsUpserted += len(a.Upserted)
	c.Injected.add(a.Faults)
	for _, e := range a.Upserted {
		k.upserted[EmailKey(e)]++
	}
	if authed {
		if k.first.IsZero() {
			k.first = start
		}
		// A concurrent request may have started just before the first one
		// recorded; it belongs to second 0.
		sec := max(0, int(start.Sub(k.first)/time.Second))
		for len(c.PerSecond) <= sec {
			c.PerSecond = append(c.PerSecond, 0)
		}
		c.PerSecond[sec]++
		c.Span = max(c.Span, start.Sub(k.first))
	}
}

// AddRejected counts n contacts refused for a reject= match that did not
// fail their request (a destination answering per contact).
func (k *Kit) AddRejected(n int) {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	k.counters.Injected.Rejected += n
}

// Counters returns a copy of the request counters.
func (k *Kit) Counters() Counters {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	out := k.counters
	out.ByStatus = maps.Clone(k.counters.ByStatus)
	out.PerSecond = append([]int{}, k.counters.PerSecond...)
	out.ByRoute = make(map[string]map[int]int, len(k.counters.ByRoute))
	for route, m := range k.counters.ByRoute {
		out.ByRoute[route] = maps.Clone(m)
	}
	return out
}

// ResetCounters zeroes the counters and Upserted; PerSecond restarts at
// the next request.
func (k *Kit) ResetCounters() {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	k.counters = newCounters()
	k.first = time.Time{}
	k.upserted = map[string]int{}
}

// Upserted tells which contacts upserts applied since New or the last
// ResetCounters: lower-case email -> how many times.
func (k *Kit) Upserted() map[string]int {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	return maps.Clone(k.upserted)
}

// EmailKey is an email as simulators index it: trimmed, lower-case.
func EmailKey(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// Simulator is a destination's simulator as local mode, the CLI and the
// tests use it, whatever the destination.
type Simulator interface {
	http.Handler
	Counters() Counters
	ResetCounters()
	Upserted() map[string]int
	DumpJSON() ([]byte, error) // the state, to keep between processes
	LoadJSON([]byte) error     // a DumpJSON's state
}

// Config builds a Simulator from the registry (shared/kinds).
type Config struct {
	APIKey            string // the one key accepted
	RequestsPerSecond float64
	Burst             int
	Faults            Faults
	Seed              int64
	Logger            *slog.Logger
	// NoRetryHint: 429s carry no wait (Autopilot's Retry-After header;
	// Ortto's wait in the body is part of its contract and always sent).
	NoRetryHint bool
}
