package e2e

import (
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestRunsThatFailBeforeSendingAreAccounted: a key refused at ingest, a
// list (or fields) lookup failing for good, and a key revoked after the
// first batch. Each run's report accounts for every row (rows as planned),
// counts the requests by status exactly as the destination saw them,
// lists what was not sent in rejected.csv with the cause, and its page's
// banner names that cause, with the technical chain folded away under it.
func TestRunsThatFailBeforeSendingAreAccounted(t *testing.T) {
	t.Parallel()
	week1 := generate(t, sample.Options{Rows: 300, Seed: 61, Invalid: 50})
	cases := []struct {
		name string
		// answer is the status to answer r with in the simulator's place,
		// or 0 to let it through.
		answer             func(r *http.Request) int
		message, rowReason string
		firstBatchSent     bool // the key is revoked after it
	}{
		{name: "key refused at ingest", answer: func(*http.Request) int { return http.StatusUnauthorized },
			message: "refused the API key", rowReason: "the run failed before sending"},
		{name: "lookup failing", answer: func(r *http.Request) int {
			if strings.Contains(r.URL.Path, "contact") && !strings.Contains(r.URL.Path, "custom-field") {
				return 0
			}
			return http.StatusServiceUnavailable
		}, message: "answered 503", rowReason: "not sent yet: finding the list failed"},
		{name: "key revoked after a batch", answer: func(*http.Request) int { return 0 }, message: "refused the API key", rowReason: "refused the API key (see the report)", firstBatchSent: true},
	}
	forEachDestination(t, func(t *testing.T, d destination) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
				var (
					mu       sync.Mutex
					seen     = map[int]int{} // status → requests the destination (or this stand-in) answered
					upserted int
				)
				f := func(w http.ResponseWriter, r *http.Request) bool {
					mu.Lock()
					defer mu.Unlock()
					code := tc.answer(r)
					if tc.firstBatchSent && r.Method == http.MethodPost && strings.HasSuffix(h.d.upsertRoute, strings.TrimPrefix(r.URL.Path, "/v1")) {
						if upserted++; upserted > 1 {
							code = http.StatusUnauthorized
						}
					}
					if code == 0 {
						seen[http.StatusOK]++
						return false
					}
					seen[code]++
					http.Error(w, `{"error":"`+http.StatusText(code)+`"}`, code)
					return true
				}
				h.intercept.Store(&f)
				key := "segments/vip-customers/week1.csv"
				info := h.put(key, week1)
				res, _ := awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerS3,
					Source: run.Source{Key: key, ETag: info.ETag, Size: info.Size}})
				if len(res) != 1 {
					t.Fatalf("results %+v", res)
				}
				rep := h.report(res[0])
				o := rep.Outcome
				if rep.Status != run.StatusFailed || o.Rows != rep.Plan.Rows || !o.Reconciles() || (o.Sent > 0) != tc.firstBatchSent ||
					o.Failed != rep.Plan.Added-o.Sent || o.Rejected != rep.Plan.Rejected {
					t.Fatalf("%s %+v, plan %+v; want failed, every planned row accounted, the first batch sent: %v", rep.Status, o, rep.Plan, tc.firstBatchSent)
				}
				if !strings.Contains(rep.Message, tc.message) || len(rep.Message) > 500 || rep.Error == "" {
					t.Fatalf("message %q (error %q); want one naming %q, under 500 characters, the chain in error", rep.Message, rep.Error, tc.message)
				}
				mu.Lock()
				total := 0
				for code, k := range seen {
					total += k
					if got := rep.Requests.ByStatus[strconv.Itoa(code)]; got != k {
						t.Errorf("requests answered %d: report %d, the destination saw %d (report %v)", code, got, k, rep.Requests.ByStatus)
					}
				}
				mu.Unlock()
				if rep.Requests.Total != total {
					t.Errorf("requests: report %d, the destination saw %d", rep.Requests.Total, total)
				}

				rows := readCSV(t, h.p.Store, rep.Rejected)
				notSent := 0
				for _, r := range rows[1:] {
					if strings.Contains(r[len(r)-1], tc.rowReason) {
						notSent++
					}
				}
				if len(rows)-1 != o.Rejected+o.Failed || notSent != o.Failed {
					t.Errorf("rejected.csv: %d rows, %d saying %q; want %d rejected in the file and %d not sent", len(rows)-1, notSent, tc.rowReason, o.Rejected, o.Failed)
				}

				page := readAll(t, h.p.Store, rep.Page)
				banner := page[strings.Index(page, `id="outcome"`):]
				banner = banner[:strings.Index(banner, "<section")]
				if !strings.Contains(banner, tc.message) || strings.Contains(banner, "before its report") || !strings.Contains(banner, `<details id="error">`) {
					t.Errorf("the page's banner does not name the cause in a sentence, with the details folded:\n%s", banner)
				}
				if tc.firstBatchSent {
					if _, err := h.p.Store.Head(context.Background(), "runs/vip-newsletter/"+rep.RunID+"/attempts/1/refused.json"); err != nil {
						t.Errorf("refused.json: %v", err)
					}
				}
				if strings.Contains(rep.Message, "refused") && !strings.Contains(rep.Message, strings.ToUpper(d.kind)+"_API_KEY") {
					t.Errorf("message %q: locally, name the variable holding the key", rep.Message)
				}
			})
		}
	})
}

func readCSV(t *testing.T, st store.ObjectStore, key string) [][]string {
	t.Helper()
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	recs, err := csv.NewReader(rc).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func readAll(t *testing.T, st store.ObjectStore, key string) string {
	t.Helper()
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
