package plan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/segment"
)

// The plan's row count is the reader's count of the data rows it read,
// checked against what reached the planner, so a row lost between the two
// fails the plan instead of leaving every count consistent without it.

// dataRow is one data row of a test segment, with what the plan must make
// of it: the test counts rows from these, not from the planner's figures.
type dataRow struct {
	email, name string
	kind        string // "valid", "rejected" or "duplicate" (of an earlier row)
}

var rowsCase = []dataRow{
	{"a@example.com", "Ann", "valid"},
	{"b@example.com", "Bo\non two lines", "valid"}, // one row, two lines
	{"not-an-email", "X", "rejected"},
	{"a@example.com", "Ann again", "valid"}, // wins over row 1
	{"", "Nobody", "rejected"},
	{"c@example.com", "Cy", "valid"},
	{"A@EXAMPLE.COM", "Ann last", "valid"}, // the same address: wins over row 4
}

// segmentFile writes rows in format, with blank lines around and between
// them, which are not data rows.
func segmentFile(format string, rows []dataRow) string {
	var b strings.Builder
	nl := "\n"
	switch format {
	case "csv-crlf":
		nl = "\r\n"
		fallthrough
	case "csv":
		b.WriteString(nl + "Email,FirstName" + nl + nl)
		for _, r := range rows {
			b.WriteString(r.email + `,"` + r.name + `"` + nl + nl)
		}
	case "jsonl":
		b.WriteString(nl)
		for _, r := range rows {
			b.WriteString(`{"Email": "` + r.email + `", "FirstName": "` + strings.ReplaceAll(r.name, "\n", `\n`) + `"}` + nl + nl)
		}
	case "json":
		b.WriteString("[" + nl)
		for i, r := range rows {
			if i > 0 {
				b.WriteString("," + nl + nl)
			}
			b.WriteString(`{"Email": "` + r.email + `", "FirstName": "` + strings.ReplaceAll(r.name, "\n", `\n`) + `"}`)
		}
		b.WriteString(nl + "]" + nl)
	}
	return b.String()
}

// readerSource is segment.Read over data, as the Lambda and local mode
// feed the planner.
func readerSource(data string) Source {
	return func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		return segment.Read(ctx, strings.NewReader(data), segment.Options{Name: "segment",
			Mapping: segment.Mapping{Email: "Email", FirstName: "FirstName"}}, emit, reject)
	}
}

func TestRowsAreTheDataRowsOfTheFile(t *testing.T) {
	t.Parallel()
	var want Counts
	for _, r := range rowsCase {
		want.Rows++ // the test's own count of data rows
		switch r.kind {
		case "rejected":
			want.Rejected++
		case "valid":
			want.Valid++
		}
	}
	want.Duplicates = 2
	want.Unique = want.Valid - want.Duplicates
	want.Added = want.Unique
	for _, format := range []string{"csv", "csv-crlf", "jsonl", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			data := segmentFile(format, rowsCase)
			dir := filepath.Join(t.TempDir(), "out")
			p, err := Build(context.Background(), readerSource(data), nil, dir, Options{Mode: ModeUpsert, TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if p.Counts != want {
				t.Errorf("counts of %d data rows (%d lines):\n got %+v\nwant %+v", len(rowsCase), strings.Count(data, "\n"), p.Counts, want)
			}
			if p.Source.Format != strings.TrimSuffix(format, "-crlf") {
				t.Errorf("read as %q", p.Source.Format)
			}
			readBack(t, dir, p, DefaultBatchSize)

			c, err := Check(context.Background(), readerSource(data), Options{Mode: ModeUpsert, TempDir: t.TempDir()},
				func(segment.Rejection) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if c.Rows != want.Rows || c.Valid != want.Valid || c.Rejected != want.Rejected || c.Unique != want.Unique || c.Duplicates != want.Duplicates {
				t.Errorf("Check counts %+v, want %+v", c, want)
			}
		})
	}
}

// losing wraps a Source and hands data row n (1-based) on times times, as
// a buggy reader or wrapper would: 0 loses it, 2 counts it twice.
func losing(src Source, n, times int) Source {
	return func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		return src(ctx,
			func(r segment.Record) error { return repeat(r.Row, n, times, func() error { return emit(r) }) },
			func(r segment.Rejection) error { return repeat(r.Row, n, times, func() error { return reject(r) }) })
	}
}

// repeat calls hand once, or times times for row n.
func repeat(row, n, times int, hand func() error) error {
	if row != n {
		times = 1
	}
	for range times {
		if err := hand(); err != nil {
			return err
		}
	}
	return nil
}

func TestALostRowFailsThePlan(t *testing.T) {
	t.Parallel()
	data := segmentFile("csv", rowsCase)
	for _, tc := range []struct {
		name       string
		row, times int
	}{
		{"valid row dropped", 1, 0},
		{"winning duplicate dropped", 7, 0},
		{"rejected row dropped", 3, 0},
		{"valid row handed over twice", 6, 2},
		{"rejected row handed over twice", 5, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := losing(readerSource(data), tc.row, tc.times)
			dir := filepath.Join(t.TempDir(), "out")
			p, err := Build(context.Background(), src, nil, dir, Options{Mode: ModeUpsert, TempDir: t.TempDir()})
			if p != nil {
				t.Fatalf("Build planned counts %+v from a source that read %+v; want ErrRowCount", p.Counts, p.Source)
			}
			if !errors.Is(err, ErrRowCount) || !strings.Contains(err.Error(), "the source read 7 data rows") {
				t.Fatalf("Build: %v; want ErrRowCount naming the 7 rows read", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a plan that lost a row wrote its folder: %v", err)
			}
			_, err = Check(context.Background(), src, Options{Mode: ModeUpsert, TempDir: t.TempDir()},
				func(segment.Rejection) error { return nil })
			if !errors.Is(err, ErrRowCount) {
				t.Fatalf("Check: err %v; want ErrRowCount", err)
			}
		})
	}
}
