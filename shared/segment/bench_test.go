package segment

import (
	"bytes"
	"context"
	"fmt"
	"testing"
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
