package segment

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// defaultMapping applies to every corpus file without a .mapping.json sidecar.
var defaultMapping = Mapping{Email: "Email", FirstName: "FirstName", LastName: "LastName"}

// generated are corpus cases too big or too binary to commit.
var generated = map[string]func() []byte{
	"gen-1mb-field.csv": func() []byte {
		return []byte("Email,FirstName,LastName\na@example.com,Ann,Lee\nb@example.com," +
			strings.Repeat("x", 1<<20) + ",Big\nc@example.com,Cy,Ng\n")
	},
	"gen-1mb-email.csv": func() []byte {
		return []byte("Email,FirstName,LastName\n" + strings.Repeat("y", 1<<20) + "@example.com,Ann,Lee\n")
	},
	"gen-huge-row.csv": func() []byte {
		return []byte("Email,FirstName,LastName\na@example.com,Ann,Lee\n\"" + strings.Repeat("z", maxRecordLen+2*bufSize))
	},
	"gen-gzip-concatenated.csv.gz": func() []byte {
		return append(gz("Email,FirstName,LastName\na@example.com,Ann,Lee\n"), gz("b@example.com,Bo,Bar\n")...)
	},
	"gen-gzip-empty.gz": func() []byte { return gz("") },
	"gen-gzip-trailing-garbage.gz": func() []byte {
		return append(gz("Email\na@example.com\n"), "garbage"...)
	},
}

func gz(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		panic(err) // bytes.Buffer does not fail
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

type corpusCase struct {
	name    string
	data    []byte
	mapping Mapping
}

func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "corpus", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	for _, p := range paths {
		if strings.HasSuffix(p, ".mapping.json") {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m := defaultMapping
		if raw, err := os.ReadFile(p + ".mapping.json"); err == nil {
			m = Mapping{}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("%s.mapping.json: %v", p, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		cases = append(cases, corpusCase{name: filepath.Base(p), data: data, mapping: m})
	}
	for name, gen := range generated {
		cases = append(cases, corpusCase{name: name, data: gen(), mapping: defaultMapping})
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	return cases
}

// outcome renders everything Read reported, one line per event.
func outcome(name string, data []byte, m Mapping) string {
	var b strings.Builder
	st, err := Read(context.Background(), bytes.NewReader(data), Options{Name: "segments/test/" + name, Mapping: m},
		func(r Record) error {
			p := r.Profile
			fmt.Fprintf(&b, "record %d: email=%q first=%q last=%q", r.Row, shorten(p.Email), shorten(p.FirstName), shorten(p.LastName))
			for _, c := range p.Custom {
				fmt.Fprintf(&b, " %s=%T(%v)", c.Key, c.Value, c.Value)
			}
			b.WriteString("\n")
			return nil
		},
		func(r Rejection) error {
			fmt.Fprintf(&b, "reject %d: email=%q reason=%q\n", r.Row, r.Email, r.Reason)
			return nil
		})
	fmt.Fprintf(&b, "stats: rows=%d valid=%d rejected=%d format=%q compressed=%t delimiter=%q\n",
		st.Rows, st.Valid, st.Rejected, st.Format, st.Compressed, st.Delimiter)
	if err != nil {
		var fe *FileError
		fmt.Fprintf(&b, "error (FileError=%t): %v\n", errors.As(err, &fe), err)
	}
	return b.String()
}

func TestReadCorpus(t *testing.T) {
	t.Parallel()
	cases := loadCorpus(t)
	if len(cases) < 25 {
		t.Fatalf("corpus has %d cases, want at least 25", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := outcome(c.name, c.data, c.mapping)
			golden := filepath.Join("testdata", "golden", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("outcome differs from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestReadNoBOMDependence(t *testing.T) {
	t.Parallel()
	plain := "Email,FirstName,LastName\r\nA@Example.com,Ann,Lee\r\n"
	want := outcome("x.csv", []byte(plain), defaultMapping)
	for _, prefix := range []string{"\xef\xbb\xbf", "\n\n", "\xef\xbb\xbf\r\n"} {
		if got := outcome("x.csv", []byte(prefix+plain), defaultMapping); got != want {
			t.Errorf("prefix %q: got\n%s\nwant\n%s", prefix, got, want)
		}
	}
	if got := outcome("x.csv", gz(plain), defaultMapping); got != strings.Replace(want, "compressed=false", "compressed=true", 1) {
		t.Errorf("gzip: got\n%s\nwant\n%s", got, want)
	}
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	okEmit := func(Record) error { return nil }
	okReject := func(Rejection) error { return nil }
	data := []byte("Email\na@example.com\nbad\n")

	t.Run("emit error stops the read", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		st, err := Read(ctx, bytes.NewReader(data), Options{Name: "f.csv", Mapping: Mapping{Email: "Email"}},
			func(Record) error { return boom }, okReject)
		if !errors.Is(err, boom) || st.Rows != 1 {
			t.Fatalf("got %v, %+v; want boom after 1 row", err, st)
		}
	})
	t.Run("reject error stops the read", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		_, err := Read(ctx, bytes.NewReader(data), Options{Name: "f.csv", Mapping: Mapping{Email: "Email"}},
			okEmit, func(Rejection) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
	})
	t.Run("source error is not a file error", func(t *testing.T) {
		t.Parallel()
		broken := errors.New("connection reset")
		r := io.MultiReader(bytes.NewReader(data), errReader{broken})
		_, err := Read(ctx, r, Options{Name: "f.csv", Mapping: Mapping{Email: "Email"}}, okEmit, okReject)
		var fe *FileError
		if !errors.Is(err, broken) || errors.As(err, &fe) {
			t.Fatalf("got %v, want the source error unwrapped to connection reset", err)
		}
	})
	t.Run("source error inside gzip is not a file error", func(t *testing.T) {
		t.Parallel()
		broken := errors.New("connection reset")
		z := gz(strings.Repeat("Email\na@example.com\n", 1000))
		r := io.MultiReader(bytes.NewReader(z[:len(z)/2]), errReader{broken})
		_, err := Read(ctx, r, Options{Name: "f.csv", Mapping: Mapping{Email: "Email"}}, okEmit, okReject)
		var fe *FileError
		if !errors.Is(err, broken) || errors.As(err, &fe) {
			t.Fatalf("got %v, want the source error unwrapped to connection reset", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := Read(cctx, bytes.NewReader(data), Options{Name: "f.csv", Mapping: Mapping{Email: "Email"}}, okEmit, okReject)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("cancelled mid-file", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		big := []byte("Email\n" + strings.Repeat("a@example.com\n", 5*ctxEvery))
		st, err := Read(cctx, bytes.NewReader(big), Options{Name: "f.csv", Mapping: Mapping{Email: "Email"}},
			func(r Record) error {
				if r.Row == 10 {
					cancel()
				}
				return nil
			}, okReject)
		if !errors.Is(err, context.Canceled) || st.Rows > 2*ctxEvery {
			t.Fatalf("got %v after %d rows, want context.Canceled soon after row 10", err, st.Rows)
		}
	})
	for _, m := range []Mapping{
		{},
		{Email: "e", Custom: []CustomField{{Source: "x", Key: "money--X"}}},
		{Email: "e", Custom: []CustomField{{Source: "", Key: "string--X"}}},
		{Email: "e", Custom: []CustomField{{Source: "x"}}},
	} {
		_, err := Read(ctx, bytes.NewReader(data), Options{Name: "f.csv", Mapping: m}, okEmit, okReject)
		if !errors.Is(err, ErrBadMapping) {
			t.Errorf("mapping %+v: got %v, want ErrBadMapping", m, err)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestFileErrorMessage(t *testing.T) {
	t.Parallel()
	e := &FileError{File: "segments/vip/a.csv", Row: 12, Problem: "unterminated quoted field", Hint: "fix the quoting or export the file again"}
	if got, want := e.Error(), "segments/vip/a.csv: row 12: unterminated quoted field; fix the quoting or export the file again"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	e = &FileError{File: "a.csv", Column: "Mail", Problem: "column not found"}
	if got, want := e.Error(), `a.csv: column "Mail": column not found`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestReadMemoryIsFlat streams a 200k-row file through a pipe and checks the
// live heap does not grow with it.
func TestReadMemoryIsFlat(t *testing.T) {
	const rows = 200_000
	pr, pw := io.Pipe()
	go func() {
		var b bytes.Buffer
		b.WriteString("Email,FirstName,LastName,Notes\n")
		for i := range rows {
			fmt.Fprintf(&b, "user%d@example.com,First%d,Last%d,%s\n", i, i, i, strings.Repeat("n", 100))
			if b.Len() > 32<<10 {
				if _, err := pw.Write(b.Bytes()); err != nil {
					return
				}
				b.Reset()
			}
		}
		_, err := pw.Write(b.Bytes())
		pw.CloseWithError(err)
	}()
	defer pr.Close()

	live := func() uint64 {
		runtime.GC() // measure what is live, not garbage awaiting collection
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	base := live()
	var peak uint64
	st, err := Read(context.Background(), pr, Options{Name: "big.csv", Mapping: defaultMapping},
		func(r Record) error {
			if r.Row%20_000 == 0 {
				peak = max(peak, live())
			}
			return nil
		},
		func(r Rejection) error { return fmt.Errorf("unexpected rejection %+v", r) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != rows || st.Valid != rows {
		t.Fatalf("stats %+v, want %d valid rows", st, rows)
	}
	// The file is ~30 MB; keeping even its emails would take several MB.
	const bound = 8 << 20
	t.Logf("heap in use: %d bytes before, %d at most while streaming", base, peak)
	if peak > base+bound {
		t.Errorf("heap in use grew from %d to %d bytes while streaming, want under +%d", base, peak, bound)
	}
}

// TestJSONSyntaxErrorLine checks that a syntax error names the line of the
// offending byte and, when the broken object began on an earlier line, that
// line too: for JSON Lines it is the line to fix.
func TestJSONSyntaxErrorLine(t *testing.T) {
	t.Parallel()
	const a = `{"Email":"a@example.com"}` + "\n"
	tests := []struct {
		name, data, want string
	}{
		{"line break inside a string", a + `{"Email":"b@exam` + "\n" + a,
			`row 2: JSON syntax error at line 2: invalid character '\n' in string literal`},
		{"line break inside a string, CRLF", a + `{"Email":"b@exam` + "\r\n" + a,
			`row 2: JSON syntax error at line 2: invalid character '\r' in string literal`},
		{"unclosed object", a + `{"Email":"b@example.com"` + "\n" + a,
			`row 2: JSON syntax error at line 3: invalid character '{' after object key:value pair (in the object that starts on line 2)`},
		{"trailing comma", a + "\n" + `{"Email":"b@example.com",}` + "\n",
			`row 2: JSON syntax error at line 3: invalid character '}' looking for beginning of object key string`},
		{"last line cut in a string", a + a + `{"Email":"c@exa` + "\n",
			`row 3: JSON syntax error at line 3: invalid character '\n' in string literal`},
		{"array object broken on its second line", "[\n" + `{"Email":"a@example.com"},` + "\n" + `{"Email":"b@example.com",` + "\n" + `"FirstName":"Bo" "x":1}` + "\n]",
			`row 2: JSON syntax error at line 4: invalid character '"' after object key:value pair (in the object that starts on line 3)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.jsonl", []byte(tc.data), defaultMapping)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got\n%s\nwant an error with %q", got, tc.want)
			}
		})
	}
}

// TestJSONDuplicateKey checks that an object naming a key twice is
// rejected, not read as whichever value came last.
func TestJSONDuplicateKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, want string
	}{
		{"email twice", `{"Email":"a@example.com","Email":"b@example.com"}`,
			`reject 1: email="" reason="key \"Email\" appears twice in the object; keep one"`},
		{"escaped spelling of the same key", `{"FirstName":"Ann","Email":"a@example.com","First\u004eame":"Bo"}`,
			`reject 1: email="a@example.com" reason="key \"FirstName\" appears twice in the object; keep one"`},
		{"unmapped key twice", `[{"Email":"a@example.com","x":{"y":1,"y":2},"note":1,"note":2}]`,
			`reject 1: email="a@example.com" reason="key \"note\" appears twice in the object; keep one"`},
		{"same key in a nested object is not a duplicate", `{"Email":"a@example.com","x":{"Email":1},"y":[{"Email":2}]}`,
			`record 1: email="a@example.com"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.jsonl", []byte(tc.data), defaultMapping)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got\n%s\nwant %q", got, tc.want)
			}
		})
	}
}

func utf16(s string, bigEndian, bom bool) []byte {
	var b []byte
	if bom {
		s = "\ufeff" + s
	}
	for _, r := range s { // the test text is all in the Basic Multilingual Plane
		if bigEndian {
			b = append(b, byte(r>>8), byte(r))
		} else {
			b = append(b, byte(r), byte(r>>8))
		}
	}
	return b
}

// TestReadEncodingProblems checks that files no reader could use get one
// clear error saying what to do, not a header of escaped bytes.
func TestReadEncodingProblems(t *testing.T) {
	t.Parallel()
	const csvText = "Email,FirstName,LastName\nann@example.com,Ann,Lee\n"
	const utf16Want = "file is UTF-16 encoded; save or export it as UTF-8 (in Excel: CSV UTF-8) and upload it again"
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"UTF-16LE with BOM", utf16(csvText, false, true), utf16Want},
		{"UTF-16BE with BOM", utf16(csvText, true, true), utf16Want},
		{"UTF-16LE without BOM", utf16(csvText, false, false), utf16Want},
		{"UTF-16BE without BOM", utf16(csvText, true, false), utf16Want},
		{"UTF-16LE JSON Lines", utf16(`{"Email":"ann@example.com"}`+"\n", false, false), utf16Want},
		{"gzipped UTF-16", gz(string(utf16(csvText, false, true))), utf16Want},
		{"gzipped twice", gz(string(gz(csvText))), "file is gzip-compressed twice; decompress it once (gunzip) and upload the result"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.csv", tc.data, defaultMapping)
			if !strings.Contains(got, "error (FileError=true): segments/test/x.csv: "+tc.want+"\n") || strings.Contains(got, "record") {
				t.Errorf("got\n%s\nwant only the error %q", got, tc.want)
			}
		})
	}
	// One stray NUL in a UTF-8 file is a bad row, not a UTF-16 file.
	got := outcome("x.csv", []byte(csvText+"bo@example.com,B\x00o,Lee\n"), defaultMapping)
	if strings.Contains(got, "UTF-16") {
		t.Errorf("UTF-8 file with a NUL taken for UTF-16:\n%s", got)
	}
}

// zipOf returns a ZIP archive holding the named files, as a spreadsheet
// application writes one (.xlsx, .numbers, .ods are ZIP archives).
func zipOf(t *testing.T, names ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("Email\na@example.com\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestReadSpreadsheets checks that a spreadsheet uploaded as it is fails
// with what to do, not as a CSV header of binary bytes.
func TestReadSpreadsheets(t *testing.T) {
	t.Parallel()
	const sheet = "this is a spreadsheet: export it as CSV; in Excel: File › Save As › CSV UTF-8; in Numbers: File › Export To › CSV"
	ole2 := append([]byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}, make([]byte, 504)...)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"xlsx", zipOf(t, "[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/worksheets/sheet1.xml"), sheet},
		{"numbers", zipOf(t, "Index/Document.iwa", "Metadata/Properties.plist"), sheet},
		{"ods", zipOf(t, "mimetype", "content.xml"), sheet},
		{"xls (OLE2)", ole2, sheet},
		{"gzipped xlsx", gz(string(zipOf(t, "[Content_Types].xml", "xl/workbook.xml"))), sheet},
		{"zipped CSV", zipOf(t, "segment.csv"),
			"this is a ZIP archive (its first file is \"segment.csv\"); upload the file inside it, unzipped or gzipped"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.csv", tc.data, defaultMapping)
			if !strings.Contains(got, "error (FileError=true): segments/test/x.csv: "+tc.want+"\n") || strings.Contains(got, "record") {
				t.Errorf("got\n%s\nwant only the error %q", got, tc.want)
			}
		})
	}
}

// TestReadCROnlyLineEnds checks that a file whose lines end with a carriage
// return alone (Excel on old Macs) is read line by line.
func TestReadCROnlyLineEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data string
		want       []string
	}{
		{"CSV", "Email,FirstName,LastName\rann@example.com,Ann,Lee\rbo@example.com,Bo,Bar\r", []string{
			`record 1: email="ann@example.com" first="Ann" last="Lee"`,
			`record 2: email="bo@example.com" first="Bo" last="Bar"`,
			`stats: rows=2 valid=2 rejected=0 format="csv"`,
		}},
		{"CSV without a last line end, gzipped", string(gz("Email;FirstName;LastName\rann@example.com;Ann;Lee\r\rbo@example.com;Bo;Bar")), []string{
			`record 1: email="ann@example.com" first="Ann" last="Lee"`,
			`record 2: email="bo@example.com" first="Bo"`,
			`stats: rows=2 valid=2 rejected=0 format="csv" compressed=true delimiter=";"`,
		}},
		{"a line break in a quoted field", "Email,FirstName,LastName\rann@example.com,Ann,\"Lee\rJones\"\rbo@example.com,Bo,Bar\r", []string{
			`record 1: email="ann@example.com" first="Ann" last="Lee\nJones"`,
			`record 2: email="bo@example.com"`,
		}},
		{"errors name the line", "Email,FirstName,LastName\rann@example.com,Ann,Lee\r\rbo@example.com,\"Bo,Bar\r", []string{
			`row 2: unterminated quoted field (opened on line 4)`,
		}},
		{"JSON Lines", `{"Email":"ann@example.com"}` + "\r" + `{"Email":"bo@example.com"}` + "\r" + `{"Email":"cy@example.com",}` + "\r", []string{
			`record 2: email="bo@example.com"`,
			`row 3: JSON syntax error at line 3:`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.csv", []byte(tc.data), defaultMapping)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("got\n%s\nwant a line with %q", got, w)
				}
			}
		})
	}
}

// TestJSONWrappedRows checks that a file holding one JSON object with the
// rows in one of its arrays fails, naming the key, instead of reading as
// one row without an email.
func TestJSONWrappedRows(t *testing.T) {
	t.Parallel()
	const hint = "; export the array itself, or JSON Lines\n"
	big := `{"data":[` + strings.Repeat(`{"Email":"someone@example.com"},`, maxRecordLen/30) + `{"Email":"last@example.com"}]}`
	tests := []struct {
		name, data, want string
	}{
		{"data", `{"data":[{"Email":"ann@example.com"},{"Email":"bo@example.com"}]}`,
			`error (FileError=true): segments/test/x.json: the file is one JSON object; its rows are under "data"` + hint},
		{"pretty, after other keys", "{\n  \"count\": 2,\n  \"meta\": {\"page\": [1, 2]},\n  \"rows\": [\n    {\"Email\": \"ann@example.com\"}\n  ]\n}\n",
			`its rows are under "rows"` + hint},
		{"nested", `{"result":{"total":1,"items":[{"Email":"ann@example.com"}]}}`,
			`its rows are under "result.items"` + hint},
		{"empty array", `{"data":[]}`, `its rows are under "data"` + hint},
		{"larger than a row may be", big, `its rows are under "data"` + hint},
		{"not a wrapper: a row with a list, then more rows", `{"Email":"ann@example.com","orders":[{"id":1}]}` + "\n" + `{"Email":"bo@example.com"}`,
			`record 2: email="bo@example.com"`},
		{"not a wrapper: the first row lacks an email", `{"orders":[{"id":1}]}` + "\n" + `{"Email":"bo@example.com"}`,
			`reject 1: email="" reason="no email"`},
		{"not a wrapper: one row without an email or a list", `{"Name":"Ann"}`,
			`reject 1: email="" reason="no email"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.json", []byte(tc.data), defaultMapping)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got\n%.600s\nwant %q", got, tc.want)
			}
			if strings.Contains(tc.want, "error") && !strings.Contains(got, "stats: rows=0 ") {
				t.Errorf("got\n%s\nwant no rows counted", got)
			}
		})
	}
}

// TestControlCharactersAreRejected checks that a name or text value with a
// control character rejects its row rather than reaching the destination.
// Tabs and line breaks are text (a cell typed on two lines).
func TestControlCharactersAreRejected(t *testing.T) {
	t.Parallel()
	m := Mapping{Email: "Email", FirstName: "FirstName", LastName: "LastName",
		Custom: []CustomField{{Source: "Note", Key: "string--Note", Type: "string"}}}
	tests := []struct {
		name, row, want string
	}{
		{"NUL in a first name", "a@example.com,An\x00n,Lee,x", `reject 1: email="a@example.com" reason="column \"FirstName\" has a control character (U+0000), which is never sent"`},
		{"NUL at the end of a first name", "a@example.com,Ann\x00,Lee,x", `reason="column \"FirstName\" has a control character (U+0000), which is never sent"`},
		{"escape in a last name", "a@example.com,Ann,Le\x1be,x", `reason="column \"LastName\" has a control character (U+001B), which is never sent"`},
		{"tab and line break inside a name are kept", "a@example.com,\"Ann\tMarie\nJo\",Lee,x", `record 1: email="a@example.com" first="Ann\tMarie\nJo"`},
		{"DEL in a text value", "a@example.com,Ann,Lee,x\x7fy", `reason="column \"Note\" has a control character (U+007F), which is never sent"`},
		{"C1 control in a text value", "a@example.com,Ann,Lee,x\u0085y", `reason="column \"Note\" has a control character (U+0085), which is never sent"`},
		{"NUL in a text value", "a@example.com,Ann,Lee,\x00", `reason="column \"Note\" has a control character (U+0000), which is never sent"`},
		{"tab and line breaks in a text value are kept", "a@example.com,Ann,Lee,\"one\ttwo\r\nthree\"", `record 1: email="a@example.com" first="Ann" last="Lee" string--Note=string(one` + "\t" + "two\nthree)"},
		{"white space around a name is trimmed, not rejected", "a@example.com,\" Ann\t\",Lee,x", `record 1: email="a@example.com" first="Ann"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.csv", []byte("Email,FirstName,LastName,Note\n"+tc.row+"\n"), m)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got\n%s\nwant %q", got, tc.want)
			}
		})
	}
	t.Run("JSON escapes", func(t *testing.T) {
		t.Parallel()
		got := outcome("x.jsonl", []byte(`{"Email":"a@example.com","FirstName":"Ann\u0000"}`+"\n"), m)
		if want := `reason="column \"FirstName\" has a control character (U+0000), which is never sent"`; !strings.Contains(got, want) {
			t.Errorf("got\n%s\nwant %q", got, want)
		}
	})
}

// TestBareQuotesReadAsExcelDoes checks that a quote inside an unquoted
// field is text, as Excel, Google Sheets and Python's csv module read it,
// instead of making the whole file invalid. A quote opens a quoted field
// only as the field's first character.
func TestBareQuotesReadAsExcelDoes(t *testing.T) {
	t.Parallel()
	const header = "Email,FirstName,LastName\n"
	tests := []struct {
		name, data string
		m          Mapping
		want       []string
	}{
		{"one quote", header + "a@example.com,A\"x,Lee\n", defaultMapping, []string{`record 1: email="a@example.com" first="A\"x" last="Lee"`}},
		{"quotes at a field's end, and several", header + "a@example.com,Ann\",O\"Neil\"s\n", defaultMapping, []string{`record 1: email="a@example.com" first="Ann\"" last="O\"Neil\"s"`}},
		{"the rows after it are rows", header + "a@example.com,5\" screen,Lee\nb@example.com,Bo,Bar\n\"c@example.com\",Cy,\"Ng\"\n", defaultMapping, []string{
			`record 1: email="a@example.com" first="5\" screen" last="Lee"`,
			`record 2: email="b@example.com" first="Bo" last="Bar"`,
			`record 3: email="c@example.com" first="Cy" last="Ng"`,
		}},
		{"beside quoted fields", header + "\"a@example.com\",B\"o,\"Lee, \"\"Jr\"\"\nline two\"\n", defaultMapping, []string{`record 1: email="a@example.com" first="B\"o" last="Lee, \"Jr\"\nline two"`}},
		{"a quote after a leading space is text", header + "a@example.com, \"Ann\",Lee\n", defaultMapping, []string{`record 1: email="a@example.com" first="\"Ann\"" last="Lee"`}},
		{"CRLF", "Email,FirstName,LastName\r\na@example.com,A\"x,Lee\r\nb@example.com,Bo,B\"\r\n", defaultMapping, []string{
			`record 1: email="a@example.com" first="A\"x" last="Lee"`,
			`record 2: email="b@example.com" first="Bo" last="B\""`,
		}},
		{"last line without a line end", header + "a@example.com,Ann,Le\"e", defaultMapping, []string{`record 1: email="a@example.com" first="Ann" last="Le\"e"`}},
		{"in the header, semicolons", "Email;Nick\"name;LastName\na@example.com;A\"x;Lee\n", Mapping{Email: "Email", FirstName: `Nick"name`}, []string{
			`record 1: email="a@example.com" first="A\"x"`, `delimiter=";"`,
		}},
		{"text after a closing quote is still an error, at its own byte", header + "a@x.com,B\"o,\"Lee\"x\nb@x.com,Bo,Bar\n", defaultMapping, []string{
			`row 1: text after a closing quote (line 2, byte 17)`,
		}},
		{"an unterminated quoted field is still an error", header + "a@x.com,B\"o,\"Lee\nb@x.com,Bo,Bar\n", defaultMapping, []string{
			`row 1: unterminated quoted field (opened on line 2)`,
		}},
		{"text after a closing quote on the last line, without a line end, is that error", header + "a@x.com,Bo,Bar\nb@x.com,Bo,\"Lee\"x", defaultMapping, []string{
			`row 2: text after a closing quote (line 3, byte 16)`,
		}},
		{"an unterminated quoted field on the last line, without a line end, is that error", header + "a@x.com,Bo,Bar\nb@x.com,Bo,\"Lee", defaultMapping, []string{
			`row 2: unterminated quoted field (opened on line 3)`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.csv", []byte(tc.data), tc.m)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("got\n%s\nwant a line with %q", got, w)
				}
			}
			if !strings.Contains(tc.name, "error") && strings.Contains(got, "error") {
				t.Errorf("got\n%s\nwant no error", got)
			}
			checkBlocksMatchOracle(t, []byte(tc.data), tc.m)
		})
	}
}
