package sample_test

import (
	"bytes"
	"encoding/csv"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
)

// validEmail is what a generated valid email looks like, in any case.
var validEmail = regexp.MustCompile(`(?i)^customer\d+@example\.com$`)

// profiles parses a generated file independently of the generator: the
// valid rows by lower-case email, the last row of an email winning.
func profiles(t *testing.T, o sample.Options) map[string]string {
	t.Helper()
	var b bytes.Buffer
	if _, err := sample.Write(&b, o); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows[1:] {
		if _, err := strconv.Atoi(r[5]); err != nil || !validEmail.MatchString(r[1]) {
			continue
		}
		out[strings.ToLower(r[1])] = strings.Join(r[2:], ",")
	}
	return out
}

// TestDeltaOfMatchesTheFiles: the ground truth DeltaOf states is what a diff
// of the two generated files finds, so delta tests may rely on it.
func TestDeltaOfMatchesTheFiles(t *testing.T) {
	t.Parallel()
	tests := []sample.Options{
		{Rows: 10000, Seed: 11, Changed: 10},
		{Rows: 1000, Seed: 3, Invalid: 97, Dupes: 50, Changed: 20, Removed: 10, Added: 15},
		{Rows: 5000, Seed: 8, Invalid: 500, Dupes: 300, Changed: 20, Removed: 10},
		{Rows: 300, Seed: 1},
	}
	for _, o := range tests {
		t.Run(strconv.Itoa(o.Rows)+"/"+strconv.FormatUint(o.Seed, 10), func(t *testing.T) {
			t.Parallel()
			base := profiles(t, sample.Options{Rows: o.Rows, Seed: o.Seed, Invalid: o.Invalid, Dupes: o.Dupes})
			next := profiles(t, o)
			var want sample.Delta
			for email, p := range next {
				if old, ok := base[email]; !ok {
					want.Added = append(want.Added, email)
				} else if old != p {
					want.Changed = append(want.Changed, email)
				}
			}
			for email := range base {
				if _, ok := next[email]; !ok {
					want.Removed = append(want.Removed, email)
				}
			}
			got := sample.DeltaOf(o)
			for _, c := range []struct {
				name      string
				got, want []string
			}{{"changed", got.Changed, want.Changed}, {"removed", got.Removed, want.Removed}, {"added", got.Added, want.Added}} {
				g, w := slices.Sorted(slices.Values(c.got)), slices.Sorted(slices.Values(c.want))
				if !slices.Equal(g, w) {
					t.Errorf("%s: DeltaOf has %d, the files differ by %d", c.name, len(g), len(w))
				}
			}
			if o.Changed > 0 && len(got.Changed) == 0 || o.Removed > 0 && len(got.Removed) == 0 || o.Added > 0 && len(got.Added) == 0 {
				t.Errorf("delta %d/%d/%d for %+v: a requested change is missing", len(got.Changed), len(got.Removed), len(got.Added), o)
			}
		})
	}
}
