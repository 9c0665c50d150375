// Package httpx is the HTTP client every destination adapter sends
// through: one chain of http.RoundTrippers, each with one job, so pacing,
// retries, error classes and request counts are written once.
//
//	retry    classify every attempt once (ok, retry, throttled, refused,
//	         permanent); back off with full jitter or the API's retry hint
//	         (capped); replay the body; ask the request's BeforeRetry
//	         whether an unanswered attempt was applied anyway
//	pace     wait for the budget's next slot (shared/pace, one waiter at a
//	         time); tell it about every 429, so every worker slows down
//	gate     send nothing once the key was refused; remember a refusal
//	count    per-client Stats: attempts, statuses, 429s, timeouts, drops
//	auth     set the key header on a clone of the request
//	attempt  one try with its own timeout, the whole answer read (bounded),
//	         redirects refused to another host or from https to http
//
// Retry is the Client's loop rather than a RoundTripper: it needs the
// call's Request (its BeforeRetry hook) and the call's attempt budget,
// which a RoundTripper could only be handed through the context, where a
// hook's own requests would find them again and re-enter the hook. One
// logical call has one budget of attempts: the requests a hook sends
// spend it too, and cannot carry a hook of their own.
//
// An adapter only builds requests and reads answers: it gives the chain its
// key header, how to read the API's error message and its retry hint
// (Autopilot: the Retry-After header; Ortto: a number in the JSON body).
// Errors are typed for the port: *dest.UnauthorizedError, *dest.RequestError.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/segment"
)

// Defaults for zero Options.
const (
	DefaultRequestsPerSecond = 5
	DefaultTimeout           = 30 * time.Second
	DefaultMaxAttempts       = 6
	DefaultBaseBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
	DefaultMaxRetryAfter     = 60 * time.Second
	// maxResponseBytes bounds what is read from one answer.
	maxResponseBytes = 16 << 20
)

// Options configures a Client. Zero values take the defaults.
type Options struct {
	API     string // names errors and log lines: "autopilot"
	BaseURL string // e.g. "https://api2.autopilothq.com/v1"; a trailing slash is fine
	// KeyHeader carries Key on every request; Key is never logged and is
	// scrubbed from every message.
	KeyHeader, Key    string
	HTTPClient        *http.Client // its Transport is the base of the chain; copied, never mutated
	RequestsPerSecond float64      // used when Limiter is nil; default 5
	Burst             int          // used when Limiter is nil; default 1
	// Limiter, when set, paces this Client, so several Clients (one per
	// batch, each with its own Stats) share one connection's budget.
	Limiter       *pace.Limiter
	Timeout       time.Duration // per attempt, answer read included; default 30s
	MaxAttempts   int           // per request including the first; default 6
	BaseBackoff   time.Duration // default 500ms; exponential with full jitter
	MaxBackoff    time.Duration // default 30s
	MaxRetryAfter time.Duration // cap on an honoured retry hint; default 60s
	Logger        *slog.Logger  // debug line per retry

	// RetryHint reads how long a 429 asks to wait; nil: none.
	RetryHint func(h http.Header, body []byte, now time.Time) (time.Duration, bool)
	// Message reads the API's message from an error answer; nil: Message.
	Message func(body []byte) string

	// Sleep and Now replace clock.Sleep and time.Now in tests.
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
}

// Client sends requests through the chain. It is safe for concurrent use;
// all goroutines share one budget and one "key refused" state.
type Client struct {
	api     string
	baseURL string // without trailing slash
	key     string
	rt      http.RoundTripper // the chain below retry: pace, gate, count, auth, attempt
	message func([]byte) string
	log     *slog.Logger

	maxAttempts int
	backoff     backoff
	sleep       func(ctx context.Context, d time.Duration) error

	gate  *gate
	stats *counter
}

// New validates opts and builds the chain.
func New(opts Options) (*Client, error) {
	api := opts.API
	if api == "" {
		api = "destination"
	}
	u, err := url.Parse(strings.TrimSpace(opts.BaseURL))
	if err != nil {
		return nil, fmt.Errorf("parsing %s base URL: %w", api, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s base URL must be an absolute http or https URL", api)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s base URL must not carry a query or fragment", api)
	}
	if strings.TrimSpace(opts.Key) == "" {
		return nil, fmt.Errorf("%s API key is empty", api)
	}
	if strings.ContainsFunc(opts.Key, unicode.IsControl) {
		// Caught here, it would fail every request as a transport error.
		return nil, fmt.Errorf("%s API key holds control characters", api)
	}
	if opts.RequestsPerSecond < 0 || opts.Burst < 0 || opts.Timeout < 0 || opts.MaxAttempts < 0 ||
		opts.BaseBackoff < 0 || opts.MaxBackoff < 0 || opts.MaxRetryAfter < 0 {
		return nil, fmt.Errorf("%s client options must not be negative", api)
	}
	c := &Client{api: api, baseURL: strings.TrimRight(u.String(), "/"), key: opts.Key, message: opts.Message, log: opts.Logger}
	if c.message == nil {
		c.message = Message
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	sleep, now := opts.Sleep, opts.Now
	if sleep == nil {
		sleep = clock.Sleep
	}
	if now == nil {
		now = time.Now
	}
	limiter := opts.Limiter
	if limiter == nil {
		limiter = pace.New(orDefault(opts.RequestsPerSecond, DefaultRequestsPerSecond), orDefault(opts.Burst, 1))
	}
	base := http.DefaultTransport
	hc := &http.Client{}
	if opts.HTTPClient != nil {
		*hc = *opts.HTTPClient // a copy: the caller's client keeps its own redirect policy
		if hc.Transport != nil {
			base = hc.Transport
		}
	} else {
		base = defaultTransport()
	}
	hc.Transport, hc.CheckRedirect, hc.Timeout = base, checkRedirect, 0
	stopped, refuse := context.WithCancelCause(context.Background())
	c.gate = &gate{stopped: stopped, refuse: refuse}
	c.stats = &counter{stats: dest.Stats{ByStatus: map[int]int{}}}
	// The chain, outermost first; see the package comment.
	var rt http.RoundTripper = &attempt{hc: hc, timeout: orDefault(opts.Timeout, DefaultTimeout)}
	rt = &auth{next: rt, header: opts.KeyHeader, key: opts.Key}
	rt = &counting{next: rt, stats: c.stats}
	rt = &gated{next: rt, gate: c.gate, api: api, message: c.message, scrub: c.scrub}
	c.rt = &pacer{next: rt, limiter: limiter}
	c.maxAttempts, c.sleep = orDefault(opts.MaxAttempts, DefaultMaxAttempts), sleep
	c.backoff = backoff{
		base: orDefault(opts.BaseBackoff, DefaultBaseBackoff), max: orDefault(opts.MaxBackoff, DefaultMaxBackoff),
		maxHint: orDefault(opts.MaxRetryAfter, DefaultMaxRetryAfter), hint: opts.RetryHint, now: now,
	}
	return c, nil
}

func orDefault[T int | float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32, // many goroutines share one host; the default of 2 would churn connections
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Caller sends one logical API call: a *Client, or the probe a
// BeforeRetry hook is given. Adapters' lookups take one, so the same code
// serves a call and a hook's check.
type Caller interface {
	Do(ctx context.Context, r Request, out any) error
}

var _ Caller = (*Client)(nil)

// Request is one logical API call, possibly sent several times.
type Request struct {
	Method string
	Path   string // relative to the base URL, dynamic segments already escaped
	Body   any    // JSON-encoded once and replayed on every attempt; nil: no body
	// BeforeRetry, when set, is asked before a retry that follows an
	// attempt that may have been applied anyway (no answer, or a 5xx);
	// true ends the call as done. No answer came, so Do leaves out as it
	// was: the hook, which found the effect, holds what its caller needs.
	// The hook sends through probe, which spends this call's attempts and
	// refuses a request carrying a hook: a check never re-enters a check.
	BeforeRetry func(ctx context.Context, probe Caller) (applied bool, err error)
}

// ErrNestedCheck is returned by a BeforeRetry hook's probe for a request
// that carries a hook of its own.
var ErrNestedCheck = errors.New("a retry check's request cannot carry a retry check")

// Do sends r until it succeeds, fails for good or runs out of attempts,
// and decodes the 2xx JSON answer into out when out is not nil (an empty
// answer is then an error, never "nothing"). When r.BeforeRetry ended the
// call, out is left as it was.
func (c *Client) Do(ctx context.Context, r Request, out any) error {
	return c.do(ctx, r, out, newBudget(c.maxAttempts))
}

// probe is the Caller a BeforeRetry hook sends through: its requests
// spend the hooked call's budget and take no hook.
type probe struct {
	c      *Client
	budget *budget
}

func (p probe) Do(ctx context.Context, r Request, out any) error {
	if r.BeforeRetry != nil {
		return fmt.Errorf("sending %s %s: %w", r.Method, segment.MaskEmails(r.Path), ErrNestedCheck)
	}
	return p.c.do(ctx, r, out, p.budget)
}

// budget is the attempts one logical call may still send, its hook's
// included; atomic, should a hook send from several goroutines.
type budget struct{ left atomic.Int64 }

func newBudget(n int) *budget {
	b := &budget{}
	b.left.Store(int64(n))
	return b
}

// take spends an attempt; false when none was left.
func (b *budget) take() bool { return b.left.Add(-1) >= 0 }

// spent reports whether no attempt is left.
func (b *budget) spent() bool { return b.left.Load() <= 0 }

func (c *Client) do(ctx context.Context, r Request, out any, b *budget) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A refused key ends every request in flight, rate wait and backoff.
	defer context.AfterFunc(c.gate.stopped, cancel)()

	var body []byte
	if r.Body != nil {
		enc, err := json.Marshal(r.Body)
		if err != nil {
			return fmt.Errorf("encoding %s %s body: %w", r.Method, segment.MaskEmails(r.Path), err)
		}
		body = enc
	}
	answer, applied, err := c.retry(ctx, r, body, b)
	switch {
	case err != nil:
		return c.stopCause(ctx, err)
	case applied || out == nil:
		return nil
	case len(bytes.TrimSpace(answer)) == 0:
		// Decoding nothing would leave out empty, which reads as "none"
		// (no lists): a lookup that answered nothing has not answered.
		return c.requestError(r, http.StatusOK, false, "the answer is empty")
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("decoding answer to %s %s: %w", r.Method, segment.MaskEmails(r.Path), err)
	}
	return nil
}

// requestError is a failed call, named once, where it failed.
func (c *Client) requestError(r Request, status int, retryable bool, message string) *dest.RequestError {
	return &dest.RequestError{API: c.api, Method: r.Method, Path: r.Path, Status: status, Retryable: retryable, Message: c.scrub(message)}
}

// stopCause prefers the refused key over the context error it caused.
func (c *Client) stopCause(ctx context.Context, err error) error {
	if c.gate.stopped.Err() != nil && (errors.Is(err, context.Canceled) || ctx.Err() != nil) {
		return context.Cause(c.gate.stopped)
	}
	return err
}

// scrub removes the key should a server or library ever echo it.
func (c *Client) scrub(s string) string { return strings.ReplaceAll(s, c.key, "[redacted]") }

// Stats returns a snapshot of the counters.
func (c *Client) Stats() dest.Stats { return c.stats.snapshot() }

// Message extracts a readable message from an error answer: a JSON
// "message", "error" or "msg" (an "error" object's "message" too), else
// the body's start.
func Message(body []byte) string {
	var doc map[string]any
	if json.Unmarshal(body, &doc) == nil {
		for _, k := range []string{"message", "error", "msg"} {
			switch v := doc[k].(type) {
			case string:
				if v != "" {
					return v
				}
			case map[string]any:
				if s, ok := v["message"].(string); ok && s != "" {
					return s
				}
			}
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// TransportMessage drops the URL that *url.Error adds; the cause is enough.
func TransportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// counter holds a Client's Stats.
type counter struct {
	mu    sync.Mutex
	stats dest.Stats
}

func (c *counter) snapshot() dest.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.ByStatus = make(map[int]int, len(c.stats.ByStatus))
	for k, v := range c.stats.ByStatus {
		s.ByStatus[k] = v
	}
	return s
}

func (c *counter) add(f func(*dest.Stats)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.stats)
}
