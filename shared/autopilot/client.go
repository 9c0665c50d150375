// Package autopilot is a client for the Autopilot REST API v1: bulk contact
// upserts with bad-record isolation, list handling, pacing to a shared request
// budget and retries that never leak the API key or raw emails.
package autopilot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/segment"
)

const (
	defaultRequestsPerSecond = 5
	defaultTimeout           = 30 * time.Second
	defaultMaxAttempts       = 6
	defaultBaseBackoff       = 500 * time.Millisecond
	defaultMaxBackoff        = 30 * time.Second
	defaultMaxRetryAfter     = 60 * time.Second
	// maxResponseBytes bounds what is read from one answer; a page of 100
	// contacts is far below it.
	maxResponseBytes = 16 << 20
	apiKeyHeader     = "autopilotapikey"
)

// Options configures a Client. Zero values take the documented defaults.
type Options struct {
	BaseURL           string        // e.g. "https://api2.autopilothq.com/v1"; a trailing slash is fine
	APIKey            string        // sent as the autopilotapikey header, never logged
	HTTPClient        *http.Client  // copied, never mutated; default: a client with transport timeouts
	RequestsPerSecond float64       // budget shared by all goroutines using the Client; default 5
	Burst             int           // default 1
	Timeout           time.Duration // per attempt; default 30s
	MaxAttempts       int           // per request including the first; default 6
	BaseBackoff       time.Duration // default 500ms; exponential with full jitter
	MaxBackoff        time.Duration // default 30s
	MaxRetryAfter     time.Duration // cap on an honoured Retry-After; default 60s
	Logger            *slog.Logger  // optional; debug line per retry
	// Limiter, when set, paces this Client instead of RequestsPerSecond and
	// Burst, so several Clients (one per batch, each with its own Stats) can
	// share one connection's budget.
	Limiter *pace.Limiter

	// sleep and now are replaceable so tests can observe backoff waits
	// without waiting.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// Client talks to one Autopilot account. It is safe for concurrent use; all
// goroutines share one request budget and one "key refused" flag.
type Client struct {
	baseURL       string // without trailing slash
	apiKey        string
	hc            *http.Client
	limiter       *pace.Limiter
	timeout       time.Duration
	maxAttempts   int
	baseBackoff   time.Duration
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	log           *slog.Logger
	sleep         func(ctx context.Context, d time.Duration) error
	now           func() time.Time

	// stopped is cancelled, with an *UnauthorizedError as cause, the first
	// time the API refuses the key; a context lets every in-flight request,
	// rate wait and backoff of every goroutine end at once.
	stopped context.Context
	refuse  context.CancelCauseFunc

	statsMu sync.Mutex
	stats   Stats
}

// Stats counts what the Client has sent since it was created.
type Stats struct {
	Requests      int         // attempts sent, retries included
	ByStatus      map[int]int // answers by HTTP status
	Retries       int
	Throttled     int // 429 answers
	NetworkErrors int // attempts that got no answer, other than timeouts
	Timeouts      int // attempts that hit the per-attempt timeout
}

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(opts.BaseURL))
	if err != nil {
		return nil, fmt.Errorf("parsing autopilot base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("autopilot base URL must be an absolute http or https URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("autopilot base URL must not carry a query or fragment")
	}
	if strings.TrimSpace(opts.APIKey) == "" {
		return nil, errors.New("autopilot API key is empty")
	}
	if strings.ContainsFunc(opts.APIKey, unicode.IsControl) {
		// Caught here, it would fail every request as a transport error.
		return nil, errors.New("autopilot API key holds control characters")
	}
	if opts.RequestsPerSecond < 0 || opts.Burst < 0 || opts.Timeout < 0 || opts.MaxAttempts < 0 ||
		opts.BaseBackoff < 0 || opts.MaxBackoff < 0 || opts.MaxRetryAfter < 0 {
		return nil, errors.New("autopilot options must not be negative")
	}

	c := &Client{
		baseURL:       strings.TrimRight(u.String(), "/"),
		apiKey:        opts.APIKey,
		timeout:       orDefault(opts.Timeout, defaultTimeout),
		maxAttempts:   orDefault(opts.MaxAttempts, defaultMaxAttempts),
		baseBackoff:   orDefault(opts.BaseBackoff, defaultBaseBackoff),
		maxBackoff:    orDefault(opts.MaxBackoff, defaultMaxBackoff),
		maxRetryAfter: orDefault(opts.MaxRetryAfter, defaultMaxRetryAfter),
		log:           opts.Logger,
		sleep:         opts.sleep,
		now:           opts.now,
		stats:         Stats{ByStatus: map[int]int{}},
	}
	c.limiter = opts.Limiter
	if c.limiter == nil {
		c.limiter = pace.New(orDefault(opts.RequestsPerSecond, defaultRequestsPerSecond), orDefault(opts.Burst, 1))
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.sleep == nil {
		c.sleep = clock.Sleep
	}
	if c.now == nil {
		c.now = time.Now
	}
	base := opts.HTTPClient
	if base == nil {
		base = defaultHTTPClient()
	}
	hc := *base // a copy: the caller's client keeps its own redirect policy
	hc.CheckRedirect = checkRedirect
	c.hc = &hc
	c.stopped, c.refuse = context.WithCancelCause(context.Background())
	return c, nil
}

func orDefault[T int | float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32, // many goroutines share one host; the default of 2 would churn connections
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

var errRedirectRefused = errors.New("redirect refused")

// checkRedirect keeps the key header from following a redirect to another
// host or from https to http; Go forwards custom headers on redirects.
func checkRedirect(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case len(via) >= 10:
		return fmt.Errorf("%w: too many redirects", errRedirectRefused)
	case !strings.EqualFold(req.URL.Host, first.Host):
		return fmt.Errorf("%w: to another host", errRedirectRefused)
	case first.Scheme == "https" && req.URL.Scheme != "https":
		return fmt.Errorf("%w: from https to http", errRedirectRefused)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	s := c.stats
	s.ByStatus = make(map[int]int, len(c.stats.ByStatus))
	for k, v := range c.stats.ByStatus {
		s.ByStatus[k] = v
	}
	return s
}

// request is one logical API call, possibly sent several times.
type request struct {
	method string
	path   string // relative to the base URL, dynamic segments already escaped
	body   any    // JSON-encoded once and replayed on every attempt; nil: no body
	// beforeRetry, when set, runs before a retry that follows an answerless
	// or 5xx attempt, which may have been applied anyway; true ends the call
	// as done without retrying.
	beforeRetry func(ctx context.Context) (bool, error)
}

// class is what an attempt's result means for the caller.
type class int

const (
	classOK        class = iota
	classRetry           // transient: 408, 5xx, timeouts, dropped connections
	classThrottled       // 429: retry, honouring Retry-After
	classRefused         // 401/403: the key is refused; stop everything
	classPermanent       // other 4xx, refused redirects: retrying cannot help
)

// classify is the one place that maps an attempt's status or transport error
// to behaviour.
func classify(status int, err error) class {
	switch {
	case err != nil && errors.Is(err, errRedirectRefused):
		return classPermanent
	case err != nil:
		return classRetry
	case status >= 200 && status < 300:
		return classOK
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return classRefused
	case status == http.StatusTooManyRequests:
		return classThrottled
	case status == http.StatusRequestTimeout || status >= 500:
		return classRetry
	default:
		return classPermanent
	}
}

// do sends r until it succeeds, fails for good or runs out of attempts, and
// decodes a 2xx JSON answer into out when out is not nil.
func (c *Client) do(ctx context.Context, r request, out any) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stopped, cancel)()

	var body []byte
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("encoding %s %s body: %w", r.method, r.path, err)
		}
		body = b
	}
	base, err := http.NewRequestWithContext(ctx, r.method, c.baseURL+r.path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building %s %s: %s", r.method, segment.MaskEmails(r.path), c.scrub(err.Error()))
	}
	base.Header.Set(apiKeyHeader, c.apiKey)
	base.Header.Set("Accept", "application/json")
	if body != nil {
		base.Header.Set("Content-Type", "application/json")
	}

	for attempt := 1; ; attempt++ {
		if err := c.waitTurn(ctx); err != nil {
			return c.stopCause(err)
		}
		// AfterFunc cancels ctx asynchronously; check the flag itself so no
		// request starts once the key has been refused.
		if c.stopped.Err() != nil {
			return context.Cause(c.stopped)
		}
		status, header, respBody, err := c.attempt(ctx, base, body)
		if ctx.Err() != nil {
			return c.stopCause(ctx.Err())
		}
		cls := classify(status, err)
		c.record(status, err, cls)
		if status == http.StatusTooManyRequests {
			c.limiter.Throttled() // every worker of the budget slows down, not only this one
		}
		switch cls {
		case classOK:
			if out == nil || len(bytes.TrimSpace(respBody)) == 0 {
				return nil
			}
			if err := json.Unmarshal(respBody, out); err != nil {
				return fmt.Errorf("decoding answer to %s %s: %w", r.method, segment.MaskEmails(r.path), err)
			}
			return nil
		case classRefused:
			refused := &UnauthorizedError{Status: status}
			c.refuse(refused)
			return refused
		case classPermanent:
			return c.apiError(r, status, respBody, err, false, "")
		}
		if attempt >= c.maxAttempts {
			return c.apiError(r, status, respBody, err, true, fmt.Sprintf("gave up after %d attempts", attempt))
		}
		wait := c.backoff(attempt, cls, header)
		attrs := []any{"method", r.method, "path", segment.MaskEmails(r.path), "status", status, "attempt", attempt, "wait", wait}
		if err != nil {
			attrs = append(attrs, "error", c.scrub(segment.MaskEmails(transportMessage(err))))
		}
		c.log.DebugContext(ctx, "autopilot: retrying request", attrs...)
		c.statsMu.Lock()
		c.stats.Retries++
		c.statsMu.Unlock()
		if err := c.sleep(ctx, wait); err != nil {
			return c.stopCause(err)
		}
		if r.beforeRetry != nil && cls == classRetry {
			done, err := r.beforeRetry(ctx)
			if err != nil {
				return fmt.Errorf("checking whether %s %s was applied: %w", r.method, segment.MaskEmails(r.path), err)
			}
			if done {
				return nil
			}
		}
	}
}

// waitTurn takes one token of the shared budget, waiting as long as needed.
func (c *Client) waitTurn(ctx context.Context) error { return c.limiter.Wait(ctx) }

// attempt sends base once with its own timeout and reads the whole answer.
func (c *Client) attempt(ctx context.Context, base *http.Request, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req := base.WithContext(ctx)
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		// An answer cut short is as good as no answer.
		return 0, nil, nil, fmt.Errorf("reading %d answer: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// stopCause prefers the refused key over the context error it caused.
func (c *Client) stopCause(err error) error {
	if c.stopped.Err() != nil {
		return context.Cause(c.stopped)
	}
	return err
}

func (c *Client) record(status int, err error, cls class) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	c.stats.Requests++
	if status > 0 {
		c.stats.ByStatus[status]++
	}
	if status == http.StatusTooManyRequests {
		c.stats.Throttled++
	}
	if err != nil && cls == classRetry {
		if isTimeout(err) {
			c.stats.Timeouts++
		} else {
			c.stats.NetworkErrors++
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// backoff is the wait before retry number attempt: Retry-After when a 429
// carries one (capped), else full jitter over an exponential ceiling.
func (c *Client) backoff(attempt int, cls class, h http.Header) time.Duration {
	if cls == classThrottled {
		if d, ok := retryAfter(h.Get("Retry-After"), c.now()); ok {
			return min(d, c.maxRetryAfter)
		}
	}
	ceiling := c.baseBackoff
	for i := 1; i < attempt && ceiling < c.maxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, c.maxBackoff)
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// retryAfter reads a Retry-After value in seconds or as an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// apiError describes a failed call without the key and with emails masked
// when printed.
func (c *Client) apiError(r request, status int, body []byte, err error, retryable bool, prefix string) *APIError {
	msg := apiMessage(body)
	if err != nil {
		msg = transportMessage(err)
	}
	if prefix != "" {
		msg = strings.TrimSuffix(prefix+": "+msg, ": ")
	}
	return &APIError{Status: status, Method: r.method, Path: r.path, Message: c.scrub(msg), Retryable: retryable}
}

// scrub removes the key should a server or library ever echo it.
func (c *Client) scrub(s string) string {
	return strings.ReplaceAll(s, c.apiKey, "[redacted]")
}

// transportMessage drops the URL that *url.Error adds; the cause is enough.
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// apiMessage extracts a readable message from an error answer.
func apiMessage(body []byte) string {
	var doc map[string]any
	if json.Unmarshal(body, &doc) == nil {
		for _, k := range []string{"message", "error", "msg"} {
			if s, ok := doc[k].(string); ok && s != "" {
				return s
			}
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
