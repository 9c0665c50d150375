package runpage

import (
	"encoding/json"
	"flag"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/run"
)

var update = flag.Bool("update", false, "rewrite testdata/*.html from testdata/*.json")

// finalStatuses are the statuses a run ends in; each has a golden report
// (testdata/<status>.json, a real run's report.json) and its page.
var finalStatuses = []string{run.StatusSucceeded, run.StatusFailed, run.StatusHeld,
	run.StatusRefused, run.StatusInvalid, run.StatusSuperseded}

// smallRuns are the reports of small real runs, for the page's words
// at 0 and 1 (succeeded.json is the many): zero.json sent nothing (one
// invalid row; no request, so no rate-limit floor); one.json has one of
// most figures (a duplicate, a rejected row, a removal of one contact
// before, one timeline slot), and a floor under a second. Its one 429 and
// one retry were added by hand: no small run met one.
var smallRuns = []string{"zero", "one"}

// otherRuns are the reports of runs of another kind: undo.json reversed
// the demo's run (segpilot undo after make run), taking its 2,980 off.
var otherRuns = []string{"undo"}

func readGolden(t testing.TB, name string) *run.Report {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep run.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("%s.json: %v", name, err)
	}
	if slices.Contains(finalStatuses, name) && rep.Status != name {
		t.Fatalf("%s.json has status %q", name, rep.Status)
	}
	return &rep
}

func TestGoldenPages(t *testing.T) {
	t.Parallel()
	for _, name := range slices.Concat(finalStatuses, smallRuns, otherRuns) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Render(readGolden(t, name))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".html")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading %s (go test ./shared/runpage -update writes it): %v", golden, err)
			}
			if string(got) != string(want) {
				t.Errorf("the page of %s.json differs from %s (go test ./shared/runpage -update rewrites it after a deliberate change)", name, golden)
			}
		})
	}
}

// A page is opened from S3 or a ticket: it must load nothing, run nothing.
var (
	urlAttr    = regexp.MustCompile(`(?i)\s(src|srcset|href|xlink:href|action|formaction|poster|background|ping|manifest)\s*=\s*"([^"]*)"`)
	activeBits = regexp.MustCompile(`(?i)<script|<iframe|<object|<embed|<img|<base|<form|url\(|@import|javascript:|\son[a-z]+\s*=\s*["']`)
	links      = regexp.MustCompile(`(?i)<link[^>]*>`)
)

// noFavicon tells the browser there is no icon, rather than let it ask
// the page's host (S3, say) for /favicon.ico.
const noFavicon = `<link rel="icon" href="data:,">`

func TestPagesAreSelfContained(t *testing.T) {
	t.Parallel()
	for _, status := range slices.Concat(finalStatuses, otherRuns) {
		t.Run(status, func(t *testing.T) {
			t.Parallel()
			rep := readGolden(t, status)
			page, err := Render(rep)
			if err != nil {
				t.Fatal(err)
			}
			checkSelfContained(t, string(page))
			if links := urlAttr.FindAllStringSubmatch(string(page), -1); rep.Rejected != "" &&
				(len(links) == 0 || !strings.Contains(string(page), `href="rejected.csv"`)) {
				t.Errorf("a finalized run's page does not link rejected.csv")
			}
		})
	}
}

func checkSelfContained(t *testing.T, page string) {
	t.Helper()
	for _, m := range urlAttr.FindAllStringSubmatch(page, -1) {
		if m[1] != "href" || m[2] != "rejected.csv" && m[2] != "data:," {
			t.Errorf("the page refers to %s=%q; the only links allowed are the relative rejected.csv and the empty icon", m[1], m[2])
		}
	}
	for _, l := range links.FindAllString(page, -1) {
		if l != noFavicon {
			t.Errorf("the page links %s; the only <link> allowed is %s", l, noFavicon)
		}
	}
	if m := activeBits.FindString(page); m != "" {
		t.Errorf("the page holds %q: no scripts, images, stylesheets or handlers may be in it", m)
	}
	if !strings.Contains(page, `content="default-src 'none'; style-src 'unsafe-inline'"`) {
		t.Error("the page has no Content-Security-Policy forbidding every fetch")
	}
}

// TestHostileReportIsEscaped: a report's strings come from file names,
// config and API answers; none can add markup to the page.
func TestHostileReportIsEscaped(t *testing.T) {
	t.Parallel()
	evil := `"><script>alert(1)</script><img src="http://evil.example/x.png" onerror="x()">`
	rep := readGolden(t, run.StatusSucceeded)
	rep.Export, rep.List, rep.Message, rep.Source.Key = evil, evil, evil, evil
	rep.Rejections = append(rep.Rejections, run.RowIssue{Row: 1, Email: evil + "@x.example", Reason: evil})
	rep.Requests.ByStatus[evil] = 1
	rep.Brake = &run.Brake{Command: evil}
	rep.Status = run.StatusHeld
	for _, r := range []*run.Report{rep, {Status: evil, Export: evil, RunID: evil}} {
		page, err := Render(r)
		if err != nil {
			t.Fatal(err)
		}
		checkSelfContained(t, string(page))
		if strings.Contains(string(page), "<script>") {
			t.Errorf("the report's text reached the page unescaped")
		}
	}
}

func TestEmailsMaskedUnlessShown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		shown      bool
		want, hide string
	}{
		{false, "j***@example.com", "jane.doe@example.com"},
		{true, "jane.doe@example.com", "j***@example.com"},
	}
	for _, tt := range tests {
		rep := readGolden(t, run.StatusSucceeded)
		rep.EmailsShown = tt.shown
		// Even a report written unmasked by mistake shows masked emails.
		rep.Rejections = []run.RowIssue{{Row: 7, Email: "jane.doe@example.com", Reason: "rejected by Autopilot: jane.doe@example.com is bad"}}
		rep.Message = "contact jane.doe@example.com failed"
		page, err := Render(rep)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(page), tt.want) || strings.Contains(string(page), tt.hide) {
			t.Errorf("showEmails %v: want %q on the page, not %q", tt.shown, tt.want, tt.hide)
		}
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	tests := []struct{ got, want string }{
		{num(0), "0"},
		{num(999), "999"},
		{num(1000), "1,000"},
		{num(3015), "3,015"},
		{num(-1234567), "-1,234,567"},
		{Seconds(6.276), "6.3s"},
		{Seconds(398.2), "6m38.2s"},
		{Seconds(0), "0s"},
		{Seconds(0.0148), "15ms"}, // not "0s"
		{Seconds(0.9996), "1s"},
		{percent(0.668), "66.8%"},
		{percent(0.2), "20%"},
		{trim(5), "5"},
		{trim(7.541), "7.54"},
		{bytesize(174723), "170.6 KiB"},
		{bytesize(512), "512 bytes"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for in, want := range map[float64]float64{0: 1, 0.7: 0.8, 5.8: 6, 11.5: 15, 46: 50, 120: 150} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

// TestSmallFigures: at 0 and 1 the page's words agree with their numbers
// ("1 slot", "1 duplicate"), no figure under a second reads as 0s, and no
// ratio is given against a floor too small for one (a run of a few
// requests finishes within its budget's first second, however it paces).
func TestSmallFigures(t *testing.T) {
	t.Parallel()
	held := readGolden(t, run.StatusHeld)
	held.Plan.Unique, held.Plan.Removed, held.Plan.Previous = 0, 1, 1
	heldFew := readGolden(t, run.StatusHeld)
	heldFew.Plan.Unique, heldFew.Plan.Removed, heldFew.Plan.Previous = 1, 0, 1
	heldFew.Brake.MaxRemovalShare = 2 // the brake held it for its size, not its removals
	pages := map[string]*run.Report{"zero": readGolden(t, "zero"), "one": readGolden(t, "one"),
		"held, 1 removal of 1": held, "held, 1 profile against 1": heldFew}
	wrong := regexp.MustCompile(`(^|[^\d.,])1 ((batch|earlier) )?(slots|duplicates|retries|requests|rows|removals|contacts|profiles|attempts)\b` +
		`|All 1 rows|took 0s|floor (of )?0s|× the floor|of 1 contacts`)
	for name, rep := range pages {
		page, err := Render(rep)
		if err != nil {
			t.Fatal(err)
		}
		text := html.UnescapeString(regexp.MustCompile(`(?s)<style>.*</style>|<[^>]*>`).ReplaceAllString(string(page), " "))
		for _, m := range wrong.FindAllStringIndex(text, -1) {
			t.Errorf("%s: %q", name, strings.Join(strings.Fields(text[max(0, m[0]-40):min(len(text), m[1]+40)]), " "))
		}
	}
}
