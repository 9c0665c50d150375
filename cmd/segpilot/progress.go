package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/segpilot/segpilot/shared/runner"
)

// progress shows a bar on a terminal and a plain line every few seconds
// otherwise (CI logs, pipes).
type progress struct {
	w        io.Writer
	tty      bool
	mu       sync.Mutex
	start    time.Time
	last     time.Time
	drawn    bool
	interval time.Duration
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, tty: tty, interval: 5 * time.Second}
}

func (p *progress) update(pr runner.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.start.IsZero() {
		p.start = now
	}
	if !p.tty && now.Sub(p.last) < p.interval && pr.Done != pr.Total {
		return
	}
	p.last = now
	line := fmt.Sprintf("batches %d/%d", pr.Done, pr.Total)
	// A rate needs a second to measure: before, it reads as 0 or thousands.
	if elapsed := now.Sub(p.start).Seconds(); elapsed >= 1 && pr.Done > 0 {
		rate := float64(pr.Done) / elapsed
		// A batch holds up to 100 contacts: the contact rate shown is an upper estimate.
		line += fmt.Sprintf(" · ≤%.0f contacts/s", rate*100)
		if pr.Done < pr.Total {
			line += " · ETA " + (time.Duration(float64(pr.Total-pr.Done)/rate) * time.Second).Round(time.Second).String()
		}
	}
	if pr.Failed > 0 {
		line += fmt.Sprintf(" · %d failed", pr.Failed)
	}
	if p.tty {
		const width = 30
		filled := width * pr.Done / max(pr.Total, 1)
		fmt.Fprintf(p.w, "\r[%s%s] %s ", strings.Repeat("█", filled), strings.Repeat("░", width-filled), line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
