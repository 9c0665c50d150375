package segment

import (
	"bytes"
	"context"
	"errors"
	"runtime/metrics"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
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

// parquetFuzzMapping names columns of every kind parquetSeeds writes.
var parquetFuzzMapping = Mapping{Email: "Email", FirstName: "FirstName", Custom: []CustomField{
	{Source: "Orders", Key: "integer--Orders", Type: "integer"},
	{Source: "Joined", Key: "date--Joined", Type: "date"},
	{Source: "Spend", Key: "float--Spend", Type: "float"},
}}

// parquetSeeds are small Parquet files of the columns parquetFuzzMapping
// names, in several physical types, codecs and layouts, and one with
// nested columns.
func parquetSeeds(f *testing.F) [][]byte { return parquetSeedsT(f) }

func parquetSeedsT(f testing.TB) [][]byte {
	rows := []map[string]any{
		{"Email": "a@example.com", "FirstName": "Ann", "Orders": int64(3), "Joined": int32(19723), "Spend": int64(1250)},
		{"Email": "b@example.com", "FirstName": nil, "Orders": int64(1 << 60), "Joined": int32(-5), "Spend": int64(-1)},
		{"Email": "not an email", "FirstName": "C\x00", "Orders": nil, "Joined": int32(0), "Spend": int64(0)},
	}
	g := parquet.Group{
		"Email":     parquet.String(),
		"FirstName": parquet.Optional(parquet.String()),
		"Orders":    parquet.Optional(parquet.Leaf(parquet.Int64Type)),
		"Joined":    parquet.Date(),
		"Spend":     parquet.Decimal(2, 10, parquet.Int64Type),
	}
	seeds := [][]byte{
		parquetFile(f, g, rows, 0, parquet.Compression(&parquet.Snappy)),
		parquetFile(f, g, rows, 1, parquet.Compression(&parquet.Gzip)),
		parquetFile(f, g, rows, 2, parquet.Compression(&parquet.Zstd), parquet.PageBufferSize(64)),
		parquetFile(f, g, rows, 0, parquet.Compression(&parquet.Uncompressed), parquet.DataPageVersion(1)),
	}
	g2 := parquet.Group{
		"Email":     parquet.Leaf(parquet.ByteArrayType),
		"FirstName": parquet.Enum(),
		"Orders":    parquet.Decimal(0, 30, parquet.FixedLenByteArrayType(13)),
		"Joined":    parquet.Timestamp(parquet.Microsecond),
		"Spend":     parquet.Leaf(parquet.DoubleType),
	}
	rows2 := []map[string]any{
		{"Email": []byte("d@example.com"), "FirstName": "Dee", "Orders": make([]byte, 13), "Joined": int64(1717164000123456), "Spend": 2.5},
	}
	seeds = append(seeds, parquetFile(f, g2, rows2, 0, parquet.Compression(&parquet.Snappy)))
	var nested bytes.Buffer
	w := parquet.NewGenericWriter[nestedRow](&nested)
	if _, err := w.Write([]nestedRow{{Email: "e@example.com", Tags: []string{"x", "y"}, Phones: []string{"1"}}}); err != nil {
		f.Fatal(err)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	return append(seeds, nested.Bytes())
}

func FuzzReadParquet(f *testing.F) {
	for _, s := range parquetSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := allocated()
		checkRead(t, data, parquetFuzzMapping)
		checkRead(t, data, Mapping{Email: "Email", FirstName: "Tags"})
		// What a damaged header claims is not allocated: a read allocates
		// its buffers and what the file's pages decode to, no more than
		// zstd's 32,768-fold expansion of its bytes (fuzzing found a 1.3 KB
		// file that made the library allocate 1.9 GB for one page).
		if got, most := allocated()-before, uint64(64<<20+32768*len(data)); got > most {
			t.Fatalf("reading %d bytes allocated %d MB, more than %d", len(data), got>>20, most>>20)
		}
	})
}

// allocated is how many bytes the process has allocated on the heap.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
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
