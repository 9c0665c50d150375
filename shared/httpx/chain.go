package httpx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/segment"
)

// Class is what an attempt's answer means for the caller.
type Class int

// The classes Classify returns.
const (
	ClassOK        Class = iota
	ClassRetry           // transient: 408, 5xx, timeouts, dropped connections, answers cut short
	ClassThrottled       // 429: retry after the API's hint or a backoff
	ClassRefused         // 401/403: the key is refused; stop everything
	ClassPermanent       // other 4xx, refused redirects: retrying cannot help
)

// Classify is the one place that maps an attempt's status or transport
// error to behaviour.
func Classify(status int, err error) Class {
	switch {
	case err != nil && errors.Is(err, errRedirectRefused):
		return ClassPermanent
	case err != nil:
		return ClassRetry
	case status >= 200 && status < 300:
		return ClassOK
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ClassRefused
	case status == http.StatusTooManyRequests:
		return ClassThrottled
	case status == http.StatusRequestTimeout || status >= 500:
		return ClassRetry
	default:
		return ClassPermanent
	}
}

// retry sends r until an attempt is not worth repeating or b is spent,
// and returns the 2xx answer's body, or applied when r.BeforeRetry found
// that an unanswered attempt went through.
func (c *Client) retry(ctx context.Context, r Request, body []byte, b *budget) (answer []byte, applied bool, err error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, c.baseURL+r.Path, bytes.NewReader(body))
	if err != nil {
		return nil, false, fmt.Errorf("building %s %s: %s", r.Method, segment.MaskEmails(r.Path), c.scrub(err.Error()))
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for attempt := 1; ; attempt++ {
		if !b.take() {
			// Only a hook's request gets here: its call spent the attempts.
			return nil, false, c.requestError(r, 0, true, fmt.Sprintf("not sent: the call's %d attempts are spent", c.maxAttempts))
		}
		try := req.Clone(ctx)
		if try.Body, err = req.GetBody(); err != nil { // replayed: the last attempt consumed it
			return nil, false, fmt.Errorf("replaying the request body: %w", err)
		}
		resp, sendErr := c.rt.RoundTrip(try)
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		var refused *dest.UnauthorizedError
		if errors.As(sendErr, &refused) {
			return nil, false, sendErr
		}
		status, header, got := 0, http.Header(nil), []byte(nil)
		if resp != nil {
			status, header, got = resp.StatusCode, resp.Header, bodyOf(resp)
		}
		cls := Classify(status, sendErr)
		switch cls {
		case ClassOK:
			return got, false, nil
		case ClassPermanent:
			return nil, false, c.requestError(r, status, false, c.describe(got, sendErr))
		}
		if b.spent() {
			return nil, false, c.gaveUp(r, status, c.describe(got, sendErr))
		}
		wait := c.backoff.wait(attempt, cls, header, got)
		attrs := []any{"method", r.Method, "path", segment.MaskEmails(r.Path), "status", status, "attempt", attempt, "wait", wait}
		if sendErr != nil {
			attrs = append(attrs, "error", c.scrub(segment.MaskEmails(TransportMessage(sendErr))))
		}
		c.log.DebugContext(ctx, c.api+": retrying request", attrs...)
		c.stats.add(func(s *dest.Stats) { s.Retries++ })
		if err := c.sleep(ctx, wait); err != nil {
			return nil, false, err
		}
		if r.BeforeRetry == nil || cls != ClassRetry {
			continue
		}
		done, checkErr := r.BeforeRetry(ctx, probe{c: c, budget: b})
		switch {
		case checkErr != nil:
			return nil, false, fmt.Errorf("checking whether %s %s was applied: %w", r.Method, segment.MaskEmails(r.Path), checkErr)
		case done:
			return nil, true, nil
		case b.spent():
			return nil, false, c.gaveUp(r, status, c.describe(got, sendErr))
		}
	}
}

// gaveUp is a call that spent its attempts (its checks' included), with
// what the last attempt got.
func (c *Client) gaveUp(r Request, status int, last string) *dest.RequestError {
	msg := fmt.Sprintf("gave up after %d attempts", c.maxAttempts)
	if last != "" {
		msg += ": " + last
	}
	return c.requestError(r, status, true, msg)
}

func (c *Client) describe(body []byte, err error) string {
	if err != nil {
		return TransportMessage(err)
	}
	return c.message(body)
}

// backoff is the wait before a retry: the API's hint for a 429 (capped),
// else full jitter over an exponential ceiling.
type backoff struct {
	base, max, maxHint time.Duration
	hint               func(h http.Header, body []byte, now time.Time) (time.Duration, bool)
	now                func() time.Time
}

func (b backoff) wait(attempt int, cls Class, h http.Header, body []byte) time.Duration {
	if cls == ClassThrottled && b.hint != nil {
		if d, ok := b.hint(h, body, b.now()); ok {
			return min(d, b.maxHint)
		}
	}
	ceiling := b.base
	for i := 1; i < attempt && ceiling < b.max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.max)
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// RetryAfter reads a Retry-After header in seconds or as an HTTP date: a
// RetryHint for APIs that send one.
func RetryAfter(h http.Header, _ []byte, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
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

// pacer waits for the budget's slot before every attempt, and slows the
// budget (every worker sharing it) on a 429.
type pacer struct {
	next    http.RoundTripper
	limiter *pace.Limiter
}

func (p *pacer) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := p.limiter.Wait(req.Context()); err != nil {
		return nil, err
	}
	resp, err := p.next.RoundTrip(req)
	p.limiter.Done()
	switch {
	case resp == nil:
	case resp.StatusCode == http.StatusTooManyRequests:
		p.limiter.Throttled(req.Context())
	case malformed(resp.StatusCode):
		p.limiter.Refused()
		p.limiter.Accepted()
	default:
		p.limiter.Accepted()
	}
	return resp, err
}

// malformed says an API answered a request as a bad one: what an API that
// locks out callers sending too many of them counts (pace.LimitRefused).
func malformed(status int) bool {
	return status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusUnprocessableEntity
}

// gate is a Client's "key refused" state: cancelled, with the
// *dest.UnauthorizedError as cause, the first time the API refuses the key.
type gate struct {
	stopped context.Context
	refuse  context.CancelCauseFunc
}

// gated sends nothing once the key was refused, and records a refusal.
type gated struct {
	next    http.RoundTripper
	gate    *gate
	api     string
	message func([]byte) string
	scrub   func(string) string
}

func (g *gated) RoundTrip(req *http.Request) (*http.Response, error) {
	// Checked after the rate wait: no request starts once the key has been
	// refused, even one that was waiting for its turn.
	if g.gate.stopped.Err() != nil {
		return nil, context.Cause(g.gate.stopped)
	}
	resp, err := g.next.RoundTrip(req)
	if resp == nil || Classify(resp.StatusCode, nil) != ClassRefused {
		return resp, err
	}
	refused := &dest.UnauthorizedError{API: g.api, Status: resp.StatusCode, Message: g.scrub(g.message(bodyOf(resp)))}
	g.gate.refuse(refused)
	return nil, refused
}

// counting keeps a Client's Stats, one count per attempt sent.
type counting struct {
	next  http.RoundTripper
	stats *counter
}

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if req.Context().Err() != nil {
		return resp, err // the caller gave up: not an answer, nor a failure of the API
	}
	c.stats.add(func(s *dest.Stats) {
		s.Requests++
		switch {
		case resp != nil:
			s.ByStatus[resp.StatusCode]++
			if resp.StatusCode == http.StatusTooManyRequests {
				s.Throttled++
			}
		case Classify(0, err) != ClassRetry:
		case isTimeout(err):
			s.Timeouts++
		default:
			s.NetworkErrors++
		}
	})
	return resp, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// auth sets the key header on a copy of the request.
type auth struct {
	next        http.RoundTripper
	header, key string
}

func (a *auth) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Body = req.Body
	r.Header.Set(a.header, a.key)
	return a.next.RoundTrip(r)
}

// attempt sends one try with its own timeout and reads the whole answer
// within it.
type attempt struct {
	hc      *http.Client
	timeout time.Duration
}

func (a *attempt) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), a.timeout)
	defer cancel()
	resp, err := a.hc.Do(req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		// An answer cut short is as good as no answer.
		return nil, fmt.Errorf("reading %d answer: %w", resp.StatusCode, err)
	}
	resp.Body = &buffered{Reader: bytes.NewReader(b), b: b}
	return resp, nil
}

// buffered is an answer read whole, so every layer may look at it.
type buffered struct {
	*bytes.Reader
	b []byte
}

func (*buffered) Close() error { return nil }

func bodyOf(resp *http.Response) []byte {
	if b, ok := resp.Body.(*buffered); ok {
		return b.b
	}
	return nil
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
