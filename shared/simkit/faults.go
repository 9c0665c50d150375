package simkit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Faults configures the failures the simulator injects into requests that
// passed auth and the rate limit.
type Faults struct {
	ServerErrorRate   float64       // share of requests answered 500/502/503 (not applied)
	ThrottleBurstRate float64       // chance that a request starts a burst of 429s
	ThrottleBurstLen  int           // consecutive requests a burst answers 429 (default 5)
	Latency           time.Duration // added to every request, before any answer
	Jitter            time.Duration // a random network delay per request, uniform in [0, Jitter), before the rate limit sees it
	DropRate          float64       // share of requests whose connection is closed with no answer (not applied)
	HangRate          float64       // share of requests that are applied, then answered only after HangFor
	HangFor           time.Duration // default 5s; cut short when the client goes away
	RejectEmails      string        // regexp; an upsert holding a matching email is answered 400, nothing applied
}

const (
	defaultBurstLen = 5
	defaultHangFor  = 5 * time.Second
)

// Validate reports the first invalid setting.
func (f Faults) Validate() error {
	rates := []struct {
		name string
		v    float64
	}{
		{"5xx", f.ServerErrorRate},
		{"429burst", f.ThrottleBurstRate},
		{"drop", f.DropRate},
		{"hang", f.HangRate},
	}
	for _, r := range rates {
		if r.v < 0 || r.v > 1 || r.v != r.v {
			return fmt.Errorf("fault %s: rate %v is not between 0 and 1", r.name, r.v)
		}
	}
	if f.ThrottleBurstLen < 0 {
		return fmt.Errorf("fault 429burst: length %d is negative", f.ThrottleBurstLen)
	}
	if f.Latency < 0 {
		return fmt.Errorf("fault latency: %v is negative", f.Latency)
	}
	if f.Jitter < 0 {
		return fmt.Errorf("fault jitter: %v is negative", f.Jitter)
	}
	if f.HangFor < 0 {
		return fmt.Errorf("fault hang: duration %v is negative", f.HangFor)
	}
	if f.RejectEmails != "" {
		if _, err := regexp.Compile(f.RejectEmails); err != nil {
			return fmt.Errorf("fault reject: %w", err)
		}
	}
	return nil
}

// faultKeys lists the spec keys, in the order the doc presents them.
const faultKeys = "5xx, 429burst, latency, jitter, drop, hang, reject"

// ParseFaults parses a fault spec such as
//
//	5xx=0.05,429burst=0.01:5,latency=20ms,jitter=80ms,drop=0.01,hang=0.01:3s,reject=@bad\.example$
//
// Items are comma-separated KEY=VALUE pairs. Because a regexp may hold a
// comma, reject= must come last and takes the rest of the spec verbatim.
// An empty spec means no faults.
func ParseFaults(spec string) (Faults, error) {
	var f Faults
	seen := map[string]bool{}
	rest := strings.TrimSpace(spec)
	for rest != "" {
		var item string
		if strings.HasPrefix(rest, "reject=") {
			item, rest = rest, ""
		} else {
			item, rest, _ = strings.Cut(rest, ",")
			item = strings.TrimSpace(item)
			rest = strings.TrimSpace(rest)
		}
		if item == "" {
			continue
		}
		key, val, ok := strings.Cut(item, "=")
		if !ok {
			return Faults{}, fmt.Errorf("fault spec item %q: want KEY=VALUE (keys: %s)", item, faultKeys)
		}
		if seen[key] {
			return Faults{}, fmt.Errorf("fault spec: %q given twice", key)
		}
		seen[key] = true
		if err := f.set(key, val); err != nil {
			return Faults{}, fmt.Errorf("fault spec item %q: %w", item, err)
		}
	}
	if err := f.Validate(); err != nil {
		return Faults{}, err
	}
	return f, nil
}

func (f *Faults) set(key, val string) error {
	var err error
	switch key {
	case "5xx":
		f.ServerErrorRate, err = parseRate(val)
	case "drop":
		f.DropRate, err = parseRate(val)
	case "429burst":
		rate, length, hasLen := strings.Cut(val, ":")
		if f.ThrottleBurstRate, err = parseRate(rate); err != nil {
			return err
		}
		if hasLen {
			n, convErr := strconv.Atoi(length)
			if convErr != nil || n < 1 {
				return fmt.Errorf("burst length %q is not a whole number >= 1", length)
			}
			f.ThrottleBurstLen = n
		}
	case "latency":
		f.Latency, err = parseDuration(val)
	case "jitter":
		f.Jitter, err = parseDuration(val)
	case "hang":
		rate, dur, hasDur := strings.Cut(val, ":")
		if f.HangRate, err = parseRate(rate); err != nil {
			return err
		}
		if hasDur {
			f.HangFor, err = parseDuration(dur)
		}
	case "reject":
		if val == "" {
			return fmt.Errorf("empty regexp")
		}
		if _, err := regexp.Compile(val); err != nil {
			return fmt.Errorf("bad regexp: %w", err)
		}
		f.RejectEmails = val
	default:
		return fmt.Errorf("unknown key %q (keys: %s)", key, faultKeys)
	}
	return err
}

func parseRate(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v > 1 || v != v {
		return 0, fmt.Errorf("rate %q is not a number between 0 and 1", s)
	}
	return v, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}
