package segment

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// BenchmarkReadCSV reads a generated 5-column CSV held in memory.
func BenchmarkReadCSV(b *testing.B) {
	const rows = 100_000
	var buf bytes.Buffer
	buf.WriteString("Email,FirstName,LastName,Orders,Tier\n")
	for i := range rows {
		fmt.Fprintf(&buf, "User%d@Example.com,First%d,Last%d,%d,gold\n", i, i, i, i%100)
	}
	data := buf.Bytes()
	opts := Options{Name: "bench.csv", Mapping: Mapping{Email: "Email", FirstName: "FirstName", LastName: "LastName",
		Custom: []CustomField{
			{Source: "Orders", Key: "integer--Orders", Type: "integer"},
			{Source: "Tier", Key: "string--Loyalty--Tier", Type: "string"},
		}}}
	emit := func(Record) error { return nil }
	reject := func(r Rejection) error { return fmt.Errorf("unexpected rejection: %s", r.Reason) }
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := Read(context.Background(), bytes.NewReader(data), opts, emit, reject)
		if err != nil || st.Valid != rows {
			b.Fatalf("got %+v, %v", st, err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkRead1M reads the same 1,000,000 rows (5 columns, as
// BenchmarkReadCSV's) from a file on disk as CSV and as Parquet (8 snappy
// row groups; in place, and streamed, which copies it to disk first), the
// way planning reads a segment. peak-heap-MB is the most heap in use seen
// while reading, sampled every 100,000 rows.
func BenchmarkRead1M(b *testing.B) {
	const rows = 1_000_000
	dir := b.TempDir()
	csvPath, pqPath := filepath.Join(dir, "bench.csv"), filepath.Join(dir, "bench.parquet")
	cf, err := os.Create(csvPath)
	if err != nil {
		b.Fatal(err)
	}
	cw := bufio.NewWriter(cf)
	cw.WriteString("Email,FirstName,LastName,Orders,Tier\n")
	for i := range rows {
		fmt.Fprintf(cw, "User%d@Example.com,First%d,Last%d,%d,gold\n", i, i, i, i%100)
	}
	if err := cw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := cf.Close(); err != nil {
		b.Fatal(err)
	}
	pf, err := os.Create(pqPath)
	if err != nil {
		b.Fatal(err)
	}
	g := parquet.Group{"Email": parquet.String(), "FirstName": parquet.String(), "LastName": parquet.String(),
		"Orders": parquet.Leaf(parquet.Int64Type), "Tier": parquet.String()}
	writeParquet(b, pf, g, func(write func(map[string]any)) {
		for i := range rows {
			write(map[string]any{"Email": fmt.Sprintf("User%d@Example.com", i), "FirstName": fmt.Sprintf("First%d", i),
				"LastName": fmt.Sprintf("Last%d", i), "Orders": int64(i % 100), "Tier": "gold"})
		}
	}, rows/8, parquet.Compression(&parquet.Snappy))
	if err := pf.Close(); err != nil {
		b.Fatal(err)
	}
	opts := Options{Mapping: Mapping{Email: "Email", FirstName: "FirstName", LastName: "LastName",
		Custom: []CustomField{
			{Source: "Orders", Key: "integer--Orders", Type: "integer"},
			{Source: "Tier", Key: "string--Loyalty--Tier", Type: "string"},
		}}, TempDir: dir}
	for _, bc := range []struct {
		name, path string
		streamed   bool
	}{
		{"format=csv", csvPath, false},
		{"format=parquet", pqPath, false},
		{"format=parquet/streamed", pqPath, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fi, err := os.Stat(bc.path)
			if err != nil {
				b.Fatal(err)
			}
			var peak uint64
			emit := func(r Record) error {
				if r.Row%100_000 == 0 {
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
				return nil
			}
			reject := func(r Rejection) error { return fmt.Errorf("unexpected rejection: %s", r.Reason) }
			b.SetBytes(fi.Size())
			b.ReportAllocs()
			for b.Loop() {
				f, err := os.Open(bc.path)
				if err != nil {
					b.Fatal(err)
				}
				var r io.Reader = f
				if bc.streamed {
					r = io.MultiReader(f)
				}
				st, err := Read(context.Background(), r, opts, emit, reject)
				f.Close()
				if err != nil || st.Valid != rows {
					b.Fatalf("got %+v, %v", st, err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(fi.Size())/(1<<20), "file-MB")
		})
	}
}
