package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestErrorsUnderServerErrorsStayShort runs exports against a simulator
// answering 60 % of requests with a 5xx (--faults 5xx=0.6), seed after
// seed: every line the CLI prints, every report's message and error, and
// every reason in rejected.csv stays under 500 characters and names each
// layer once. (A retry check that re-entered itself once nested errors
// ~90 levels deep, filling the output, report.json and the page.)
func TestErrorsUnderServerErrorsStayShort(t *testing.T) {
	t.Parallel()
	var failures atomic.Int32
	t.Run("seeds", func(t *testing.T) {
		for seed := range 8 {
			t.Run(fmt.Sprint(seed+1), func(t *testing.T) {
				t.Parallel()
				config, file, bucket := fixture(t, 400)
				_, out, errOut := segpilot(t, context.Background(), "run", "--config", config, "--export", "vip-newsletter", "--file", file,
					"--bucket-dir", bucket, "--sim", "--faults", "5xx=0.6", "--seed", fmt.Sprint(seed+1))
				texts := strings.Split(out+errOut, "\n")
				folder, err := store.NewFolder(bucket)
				if err != nil {
					t.Fatal(err)
				}
				reps, err := run.ListReports(context.Background(), folder, "vip-newsletter")
				if err != nil || len(reps) == 0 {
					t.Fatalf("reports %v, %v", reps, err)
				}
				for _, rep := range reps {
					if rep.Status != run.StatusSucceeded {
						failures.Add(1)
					}
					texts = append(texts, rep.Message, rep.Error)
					texts = append(texts, rejectedReasons(t, folder, rep.Rejected)...)
				}
				for _, s := range texts {
					if len(s) >= 500 {
						t.Errorf("%d characters: %.300s…", len(s), s)
					}
					if layer := repeatedLayer(s); layer != "" {
						t.Errorf("%q twice in %q", layer, s)
					}
				}
			})
		}
	})
	if failures.Load() == 0 {
		t.Fatal("no run failed under 5xx=0.6: the test proves little")
	}
}

// repeatedLayer returns a part of an error chain ("a: b: c") that occurs
// in it twice, or "".
func repeatedLayer(s string) string {
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ": ") {
		part = strings.TrimSpace(part)
		if len(part) < 12 { // "status 502" and the like may recur legitimately
			continue
		}
		if seen[part] {
			return part
		}
		seen[part] = true
	}
	return ""
}

func rejectedReasons(t *testing.T, st store.ObjectStore, key string) []string {
	t.Helper()
	if key == "" {
		return nil
	}
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	recs, err := csv.NewReader(rc).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs[1:] {
		out = append(out, r[len(r)-1])
	}
	return out
}
