package segment

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzMapping exercises every conversion; corpus files lacking these
// columns still exercise format detection and the header errors.
var fuzzMapping = Mapping{Email: "Email", FirstName: "FirstName", Custom: []CustomField{
	{Source: "Orders", Key: "integer--Orders", Type: "integer"},
	{Source: "Joined", Key: "date--Joined", Type: "date"},
}}

func seedCorpus(f *testing.F, keep func(name string) bool) {
	for _, c := range loadCorpus(f) {
		if keep(c.name) && len(c.data) < 1<<16 {
			f.Add(c.data)
		}
	}
}

func FuzzReadCSV(f *testing.F) {
	seedCorpus(f, func(name string) bool { return !strings.Contains(name, ".json") })
	f.Add([]byte("Email,FirstName,Orders,Joined\na@example.com,Ann,12,2024-01-02\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRead(t, data, fuzzMapping)
		checkRead(t, data, defaultMapping)
	})
}

func FuzzReadJSON(f *testing.F) {
	seedCorpus(f, func(name string) bool { return strings.Contains(name, ".json") })
	f.Add([]byte(`[{"Email":"a@example.com","Orders":12,"Joined":"2024-01-02","FirstName":null}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRead(t, data, fuzzMapping)
	})
}

// checkRead reads data and checks the invariants every outcome must keep.
func checkRead(t *testing.T, data []byte, m Mapping) {
	t.Helper()
	lastRow := 0
	inOrder := func(row int) error {
		if row != lastRow+1 {
			t.Fatalf("row %d after row %d", row, lastRow)
		}
		lastRow = row
		return nil
	}
	st, err := Read(context.Background(), bytes.NewReader(data), Options{Name: "fuzz", Mapping: m},
		func(r Record) error {
			if _, err := NormalizeEmail(r.Profile.Email); err != nil {
				t.Fatalf("row %d: emitted an invalid email: %v", r.Row, err)
			}
			if !utf8.ValidString(r.Profile.FirstName) {
				t.Fatalf("row %d: emitted invalid UTF-8", r.Row)
			}
			return inOrder(r.Row)
		},
		func(r Rejection) error {
			if r.Reason == "" {
				t.Fatalf("row %d: rejection without a reason", r.Row)
			}
			return inOrder(r.Row)
		})
	var fe *FileError
	if err != nil && !errors.As(err, &fe) {
		t.Fatalf("error is not a *FileError: %v", err)
	}
	if st.Valid+st.Rejected > st.Rows || (err == nil && st.Rows != st.Valid+st.Rejected) {
		t.Fatalf("stats do not reconcile: %+v (err %v)", st, err)
	}
	if st.Rows != lastRow && err == nil {
		t.Fatalf("stats say %d rows, callbacks saw %d", st.Rows, lastRow)
	}
}

func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{"jo@example.com", " Jo@Example.COM ", "Jo <jo@x.com>", "a@b@c", "josé@bücher.de", "e\u0301@x.com", "", "@", "a@.b", "a@b.", "\xff@x.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeEmail(s)
		if err != nil {
			if got != "" {
				t.Fatalf("NormalizeEmail(%q) returned %q with error %v", s, got, err)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(s)) && len(strings.TrimSpace(s)) > 3 {
				t.Fatalf("error %q repeats the address", err)
			}
			return
		}
		if !utf8.ValidString(got) || len(got) > maxEmailLen || strings.Count(got, "@") != 1 {
			t.Fatalf("NormalizeEmail(%q) = %q: not a plain address", s, got)
		}
		again, err := NormalizeEmail(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, got, again, err)
		}
	})
}
