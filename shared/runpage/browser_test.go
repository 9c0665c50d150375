package runpage

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/run"
)

// pageHost names the pages for Chromium; it never resolves: Chromium's
// only way out is the proxy, which serves the pages and nothing else.
const pageHost = "segpilot-page.test"

// pageProxy serves pages at http://segpilot-page.test/<name>.html to the
// browser under test and refuses anything else (a plain request, or a
// CONNECT for https), recording it for the test's log.
type pageProxy struct {
	addr string

	mu      sync.Mutex
	pages   map[string][]byte
	refused []string
}

func startProxy(t *testing.T) *pageProxy {
	t.Helper()
	p := &pageProxy{pages: map[string][]byte{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed on Close
	t.Cleanup(func() {
		srv.Close()
		if r := p.refusedRequests(); len(r) > 0 {
			t.Logf("the proxy refused (Chromium's background traffic, favicons, the canary's fetches): %v", r)
		}
	})
	p.addr = ln.Addr().String()
	return p
}

// serve publishes page and returns its URL.
func (p *pageProxy) serve(name string, page []byte) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pages["/"+name+".html"] = page
	return "http://" + pageHost + "/" + name + ".html"
}

func (p *pageProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	page, ok := p.pages[r.URL.Path]
	if !ok || r.Method != http.MethodGet || r.Host != pageHost {
		p.refused = append(p.refused, r.Method+" "+r.Host+r.URL.Path)
	}
	p.mu.Unlock()
	if !ok || r.Method != http.MethodGet || r.Host != pageHost {
		http.Error(w, "segpilot's page test: only the pages are served", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(page) //nolint:errcheck // the browser's problem if it hangs up
}

func (p *pageProxy) refusedRequests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.refused)
}

func needChromium(t *testing.T) string {
	return testutil.NeedTool(t, "chromium", "apt-get install -y --no-install-recommends chromium (Debian's package; .ci/run installs it)")
}

// TestPagesInChromium opens each golden page in headless Chromium and
// checks the figures on the rendered page against report.json, and that
// the page requested nothing but itself (the DevTools protocol's network
// events list the page's own requests, apart from Chromium's background
// traffic). The page's Content-Security-Policy, which would block any
// fetch, is taken out first: the page itself must not try. A canary page
// that does fetch proves the check sees it.
func TestPagesInChromium(t *testing.T) {
	t.Parallel()
	proxy := startProxy(t)
	b := startBrowser(t, needChromium(t), proxy.addr)
	withoutCSP := func(b []byte) []byte {
		return bytes.Replace(b, []byte(`http-equiv="Content-Security-Policy"`), []byte(`name="csp-removed-by-test"`), 1)
	}
	tests := []struct {
		name, status string
		tamper       func([]byte) []byte
		want         []string // what the page must request besides itself; nil: nothing
	}{
		{name: run.StatusSucceeded},
		{name: run.StatusFailed},
		{name: run.StatusHeld},
		{name: run.StatusRefused},
		{name: run.StatusInvalid},
		{name: run.StatusSuperseded},
		{name: "zero"},
		{name: "one"},
		{name: "canary", status: run.StatusSucceeded, tamper: func(b []byte) []byte {
			return bytes.Replace(b, []byte("</main>"), []byte(`<img src="http://elsewhere.test/pixel.png"><link rel="stylesheet" href="https://cdn.example/x.css"></main>`), 1)
		}, want: []string{"http://elsewhere.test/pixel.png", "https://cdn.example/x.css"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep := readGolden(t, cmp.Or(tt.status, tt.name))
			page, err := Render(rep)
			if err != nil {
				t.Fatal(err)
			}
			page = withoutCSP(page)
			if tt.tamper != nil {
				page = tt.tamper(page)
			}
			url := proxy.serve(tt.name, page)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tab := b.newTab(t)
			dom, err := tab.load(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			var others []string
			for _, r := range tab.requests() {
				if r != url {
					others = append(others, r)
				}
			}
			slices.Sort(others)
			if !slices.Equal(others, tt.want) {
				t.Errorf("the page requested %q besides itself, want %q", others, tt.want)
			}
			if tt.tamper == nil {
				checkFigures(t, rep, []byte(dom))
			}
		})
	}
}

// checkFigures compares what the browser rendered with report.json's own
// values, formatted here independently of the renderer's view.
func checkFigures(t *testing.T, rep *run.Report, dump []byte) {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(dump))
	if err != nil {
		t.Fatalf("parsing Chromium's DOM: %v", err)
	}
	byID, figures := map[string]string{}, map[string]string{}
	rows := 0
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			for _, a := range n.Attr {
				switch a.Key {
				case "id":
					byID[a.Val] = text(n)
				case "data-figure":
					figures[a.Val] = text(n)
				}
			}
			if n.Data == "tr" && n.Parent != nil && n.Parent.Data == "tbody" {
				rows++
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	expect := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s on the page = %q, want %q", what, got, want)
		}
	}
	contains := func(what, got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			t.Errorf("%s on the page = %q, want it to contain %q", what, got, want)
		}
	}
	expect("export", byID["export"], rep.Export)
	expect("run id", byID["run-id"], rep.RunID)
	expect("status", strings.ToLower(byID["status"]), rep.Status)
	if rep.Message != "" {
		contains("message", byID["message"], rep.Message[:min(len(rep.Message), 40)])
	}
	p, o := rep.Plan, rep.Outcome
	if p.Rows > 0 {
		for key, n := range map[string]int{"rows": p.Rows, "valid": p.Valid, "unique": p.Unique, "added": p.Added,
			"changed": p.Changed, "unchanged": p.Unchanged, "removed": p.Removed} {
			expect("figure "+key, figures[key], thousands(n))
		}
	}
	if rep.Rejected == "" { // not finalized: no outcome, requests or rejections shown
		for _, id := range []string{"requests", "duration", "rejections"} {
			if _, ok := byID[id]; ok {
				t.Errorf("a %s run's page has a #%s section", rep.Status, id)
			}
		}
	} else {
		for key, n := range map[string]int{"sent": o.Sent, "rejected-by-Autopilot": o.RejectedByAPI, "failed": o.Failed,
			"taken-off-the-list": o.Removed} {
			expect("figure "+key, figures[key], thousands(n))
		}
		contains("headline", byID["headline"], thousands(o.Sent)+" sent")
		contains("request line", byID["request-line"], fmt.Sprintf("%s (%s answered 429, %s)",
			count(rep.Requests.Total, "request"), thousands(rep.Requests.Throttled), count(rep.Requests.Retries, "retry")))
		expect("duration", figures["took"], duration(rep.DurationSeconds))
		expect("floor", figures["floor"], duration(rep.FloorSeconds))
		if rows != len(rep.Rejections) {
			t.Errorf("the page lists %d rejected rows, report.json %d", rows, len(rep.Rejections))
		}
		if rep.RejectionsTotal > len(rep.Rejections) {
			contains("rejections", byID["rejections"], fmt.Sprintf("The first %d of %s rows", len(rep.Rejections), thousands(rep.RejectionsTotal)))
		}
		expect("rejected.csv link", byID["rejected-csv"], "rejected.csv")
		if rep.Timeline != nil {
			contains("requests caption", byID["requests-caption"], fmt.Sprintf("against a budget of %v/s", rep.RequestsPerSecond))
			expect("budget line", byID["budget"], fmt.Sprintf("%v/s", rep.RequestsPerSecond))
		}
	}
	if rep.Status == run.StatusHeld {
		expect("lift command", byID["brake-command"], rep.Brake.Command)
		contains("brake figures", byID["brake-figures"], thousands(p.Removed)+" of "+thousands(p.Previous))
		contains("brake limit", byID["brake-limit"], strconv.FormatFloat(math.Round(rep.Brake.MaxRemovalShare*1000)/10, 'f', -1, 64)+"%")
	}
}

// text is the text content of n, as the browser shows it.
func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if c.Type != html.ElementNode || c.Data != "title" {
				walk(c)
			}
		}
	}
	walk(n)
	return strings.TrimSpace(b.String())
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// count says n things in English: "1 retry", "2 retries".
func count(n int, one string) string {
	switch {
	case n == 1:
		return "1 " + one
	case strings.HasSuffix(one, "y"):
		return thousands(n) + " " + strings.TrimSuffix(one, "y") + "ies"
	}
	return thousands(n) + " " + one + "s"
}

// duration is s to a tenth of a second, or to the millisecond under one.
func duration(s float64) string {
	if s < 0.9995 {
		return (time.Duration(s*1000+0.5) * time.Millisecond).String()
	}
	return (time.Duration(s*10+0.5) * 100 * time.Millisecond).String()
}

// TestScreenshots writes docs/run-page-<status>.png for the README, with
// SEGPILOT_SCREENSHOTS set to the folder (make screenshots).
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("SEGPILOT_SCREENSHOTS")
	if dir == "" {
		t.Skip("set SEGPILOT_SCREENSHOTS=DIR (make screenshots) to write the golden pages' screenshots")
	}
	proxy := startProxy(t)
	b := startBrowser(t, needChromium(t), proxy.addr)
	for _, status := range finalStatuses {
		page, err := Render(readGolden(t, status))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		tab := b.newTab(t)
		_, err = tab.load(ctx, proxy.serve(status, page))
		var shot []byte
		if err == nil {
			shot, err = tab.screenshot(ctx, 820, 2000) // the top of a long rejected-rows table is enough
		}
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", status, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "run-page-"+status+".png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
