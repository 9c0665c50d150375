package segment

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/deprecated"
	"github.com/parquet-go/parquet-go/encoding/thrift"
)

// parquetFile writes rows (values by column name; nil is null) under a
// schema of the columns g into a Parquet file, perGroup rows a row group.
func parquetFile(t testing.TB, g parquet.Group, rows []map[string]any, perGroup int, opts ...parquet.WriterOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	writeParquet(t, &buf, g, func(write func(map[string]any)) {
		for _, r := range rows {
			write(r)
		}
	}, perGroup, opts...)
	return buf.Bytes()
}

// writeParquet writes the rows gen gives to out, perGroup a row group.
func writeParquet(t testing.TB, out io.Writer, g parquet.Group, gen func(write func(map[string]any)), perGroup int, opts ...parquet.WriterOption) {
	t.Helper()
	w := parquet.NewWriter(out, append([]parquet.WriterOption{parquet.NewSchema("segment", g)}, opts...)...)
	n := 0
	gen(func(r map[string]any) {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
		if n++; perGroup > 0 && n%perGroup == 0 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// csvFile writes header and rows as CSV, quoting as needed.
func csvFile(t testing.TB, header []string, rows [][]string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.Write(header); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAll(rows); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rowLines is the outcome's records and rejections, without its stats.
func rowLines(out string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if strings.HasPrefix(l, "record ") || strings.HasPrefix(l, "reject ") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// people is a segment with something of each case: a null name, an invalid
// email, a duplicate, a name with a control character, names to trim and
// put in NFC, one not UTF-8, one too long; the same values recur, as in a
// column a dictionary encodes.
func people(n int) ([]map[string]any, [][]string) {
	var pq []map[string]any
	var rows [][]string
	long := strings.Repeat("x", maxFieldLen+1)
	for i := range n {
		email, first, last := fmt.Sprintf("User%d@Example.com", i), fmt.Sprintf("First%d", i), fmt.Sprintf("Last%d", i%7)
		switch i % 10 {
		case 3:
			email = fmt.Sprintf("broken%d.example.com", i)
		case 5:
			email = "User1@Example.com"
		case 7:
			first = "Bad\x00name"
		case 8:
			email, last = fmt.Sprintf(" user%d@example.com\t", i%3), " Chloe\u0301 "
		case 9:
			last = "M\xffller"
		}
		if i%1000 == 2 {
			last = long
		}
		r := map[string]any{"Email": email, "FirstName": first, "LastName": last}
		row := []string{email, first, last}
		if i%4 == 1 {
			r["FirstName"], row[1] = nil, ""
		}
		pq, rows = append(pq, r), append(rows, row)
	}
	return pq, rows
}

var peopleSchema = parquet.Group{
	"Email":     parquet.String(),
	"FirstName": parquet.Optional(parquet.String()),
	"LastName":  parquet.String(),
	"Tags":      parquet.List(parquet.String()), // not mapped: never read
}

// peopleDictionarySchema is peopleSchema as warehouses write it: every
// column dictionary-encoded.
var peopleDictionarySchema = parquet.Group{
	"Email":     parquet.Encoded(parquet.String(), &parquet.RLEDictionary),
	"FirstName": parquet.Optional(parquet.Encoded(parquet.String(), &parquet.RLEDictionary)),
	"LastName":  parquet.Encoded(parquet.String(), &parquet.RLEDictionary),
	"Tags":      parquet.List(parquet.String()),
}

// TestReadParquetLikeCSV checks that a Parquet file reads exactly as the
// same rows in CSV, whatever its codec, row groups and pages, and however
// the file reaches Read.
func TestReadParquetLikeCSV(t *testing.T) {
	t.Parallel()
	const n = 2500 // over two batches per row group, several row groups
	pqRows, csvRows := people(n)
	want := rowLines(outcome("x.csv", csvFile(t, []string{"Email", "FirstName", "LastName"}, csvRows), defaultMapping))
	if strings.Count(want, "\n") != n || !strings.Contains(want, "reject 4:") {
		t.Fatalf("the CSV reads oddly:\n%.500s", want)
	}
	codecs := []struct {
		name  string
		codec parquet.WriterOption
	}{
		{"snappy", parquet.Compression(&parquet.Snappy)},
		{"gzip", parquet.Compression(&parquet.Gzip)},
		{"zstd", parquet.Compression(&parquet.Zstd)},
		{"uncompressed", parquet.Compression(&parquet.Uncompressed)},
		{"lz4", parquet.Compression(&parquet.Lz4Raw)}, // each page decoded first (parquet_headers.go)
	}
	encodings := []struct {
		name   string
		schema parquet.Group
	}{{"plain", peopleSchema}, {"dictionary", peopleDictionarySchema}}
	for _, c := range codecs {
		for _, enc := range encodings {
			data := parquetFile(t, enc.schema, pqRows, 1000, c.codec, parquet.PageBufferSize(4<<10))
			reads := []struct {
				name       string
				read       func(Options, func(Record) error, func(Rejection) error) (Stats, error)
				compressed bool
			}{
				{"in place", func(o Options, e func(Record) error, r func(Rejection) error) (Stats, error) {
					return Read(context.Background(), bytes.NewReader(data), o, e, r)
				}, false},
				{"ReadAt", func(o Options, e func(Record) error, r func(Rejection) error) (Stats, error) {
					return ReadAt(context.Background(), bytes.NewReader(data), int64(len(data)), o, e, r)
				}, false},
				{"streamed", func(o Options, e func(Record) error, r func(Rejection) error) (Stats, error) {
					return Read(context.Background(), io.MultiReader(bytes.NewReader(data)), o, e, r)
				}, false},
				{"gzipped", func(o Options, e func(Record) error, r func(Rejection) error) (Stats, error) {
					return Read(context.Background(), bytes.NewReader(gz(string(data))), o, e, r)
				}, true},
			}
			for _, rd := range reads {
				t.Run(c.name+"/"+enc.name+"/"+rd.name, func(t *testing.T) {
					t.Parallel()
					var b strings.Builder
					st, err := rd.read(Options{Name: "x.parquet", Mapping: defaultMapping, TempDir: t.TempDir()},
						func(r Record) error {
							p := r.Profile
							fmt.Fprintf(&b, "record %d: email=%q first=%q last=%q\n", r.Row, shorten(p.Email), shorten(p.FirstName), shorten(p.LastName))
							return nil
						},
						func(r Rejection) error {
							fmt.Fprintf(&b, "reject %d: email=%q reason=%q\n", r.Row, r.Email, r.Reason)
							return nil
						})
					if err != nil {
						t.Fatal(err)
					}
					if got := b.String(); got != want {
						t.Errorf("differs from the same rows as CSV\n--- got\n%.2000s--- want\n%.2000s", got, want)
					}
					if wantSt := (Stats{Rows: n, Valid: st.Valid, Rejected: n - st.Valid, Format: "parquet", Compressed: rd.compressed}); st != wantSt || st.Valid == 0 {
						t.Errorf("stats %+v, want %+v", st, wantSt)
					}
				})
			}
		}
	}
}

func int96Of(tm string) deprecated.Int96 {
	t0 := mustTime(tm)
	days := t0.Unix()/86400 + 2440588
	nanos := t0.Sub(t0.Truncate(24 * 60 * 60 * 1e9)).Nanoseconds()
	return deprecated.Int96{uint32(nanos), uint32(nanos >> 32), uint32(days)}
}

// twos is n as a size-byte big-endian two's complement.
func twos(n int64, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b[size-8:], uint64(n))
	if n < 0 {
		for i := range size - 8 {
			b[i] = 0xff
		}
	}
	return b
}

// TestParquetValuesConvertLikeCSV checks that each Parquet type reaches a
// custom field of each kind as the text a CSV export would hold, and so
// under the same rules: every case is read as Parquet and as CSV, and both
// must give the same records and rejections.
func TestParquetValuesConvertLikeCSV(t *testing.T) {
	t.Parallel()
	uuid := [16]byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	ms := mustTime("2024-05-31T14:00:00.123Z").UnixMilli()
	tests := []struct {
		name   string
		node   parquet.Node
		typ    string // the custom field's type
		values []any
		csv    []string // the same values as a CSV export writes them
		want   []string // lines the outcome must have, to pin the text
	}{
		{"INT64", parquet.Optional(parquet.Leaf(parquet.Int64Type)), "integer",
			[]any{int64(42), int64(maxExactInt), int64(maxExactInt + 1), int64(math.MinInt64), nil},
			[]string{"42", "9007199254740991", "9007199254740992", "-9223372036854775808", ""},
			[]string{`integer--X=int64(42)`, `reject 3: email="p2@example.com" reason="column \"X\": \"9007199254740992\" is beyond ±9007199254740991, the largest integer Ortto is sure to keep exactly`}},
		{"INT32", parquet.Leaf(parquet.Int32Type), "integer", []any{int32(-7)}, []string{"-7"}, []string{`integer--X=int64(-7)`}},
		{"UINT64", parquet.Uint(64), "integer", []any{uint64(1 << 63)}, []string{"9223372036854775808"}, []string{`is out of range for an integer`}},
		{"UINT32", parquet.Uint(32), "integer", []any{uint32(4000000000)}, []string{"4000000000"}, []string{`integer--X=int64(4000000000)`}},
		{"DOUBLE", parquet.Leaf(parquet.DoubleType), "float", []any{3.25, 1e-7, 1e21, math.NaN(), math.Inf(1)},
			[]string{"3.25", "0.0000001", "1000000000000000000000", "NaN", "+Inf"}, []string{`float--X=float64(3.25)`, `float--X=float64(1e-07)`}},
		{"DOUBLE holding whole numbers, to an integer field", parquet.Leaf(parquet.DoubleType), "integer", []any{1e6, 2.5},
			[]string{"1000000", "2.5"}, []string{`integer--X=int64(1000000)`, `"2.5\" is not an integer"`}},
		{"FLOAT", parquet.Leaf(parquet.FloatType), "float", []any{float32(0.1)}, []string{"0.1"}, []string{`float--X=float64(0.1)`}},
		{"BOOLEAN", parquet.Leaf(parquet.BooleanType), "boolean", []any{true, false}, []string{"true", "false"}, []string{`boolean--X=bool(true)`, `boolean--X=bool(false)`}},
		{"BOOLEAN to a text field", parquet.Leaf(parquet.BooleanType), "string", []any{true}, []string{"true"}, []string{`string--X=string(true)`}},
		{"DATE", parquet.Date(), "date", []any{int32(19723), int32(-1), int32(math.MaxInt32)}, []string{"2024-01-01", "1969-12-31", "5881580-07-11"},
			[]string{`date--X=string(2024-01-01)`, `date--X=string(1969-12-31)`, `is not a date`}},
		{"TIMESTAMP(MILLIS)", parquet.Timestamp(parquet.Millisecond), "date", []any{ms}, []string{"2024-05-31T14:00:00.123Z"}, []string{`date--X=string(2024-05-31T14:00:00.123Z)`}},
		{"TIMESTAMP(MICROS), local", parquet.TimestampAdjusted(parquet.Microsecond, false), "date", []any{ms*1000 + 4}, []string{"2024-05-31T14:00:00.123004Z"}, []string{`date--X=string(2024-05-31T14:00:00.123004Z)`}},
		{"TIMESTAMP(NANOS)", parquet.Timestamp(parquet.Nanosecond), "date", []any{ms * 1e6}, []string{"2024-05-31T14:00:00.123Z"}, nil},
		{"TIMESTAMP to a text field", parquet.Timestamp(parquet.Millisecond), "string", []any{ms}, []string{"2024-05-31T14:00:00.123Z"}, []string{`string--X=string(2024-05-31T14:00:00.123Z)`}},
		{"INT96 (legacy timestamp)", parquet.Leaf(parquet.Int96Type), "date", []any{int96Of("2021-03-04T05:06:07.5Z")}, []string{"2021-03-04T05:06:07.5Z"}, []string{`date--X=string(2021-03-04T05:06:07.5Z)`}},
		{"TIME(MILLIS)", parquet.Time(parquet.Millisecond), "string", []any{int32(13*3600e3 + 45*60e3 + 500)}, []string{"13:45:00.5"}, []string{`string--X=string(13:45:00.5)`}},
		{"DECIMAL(10,2) as INT64", parquet.Decimal(2, 10, parquet.Int64Type), "float", []any{int64(12345), int64(-5), int64(0)}, []string{"123.45", "-0.05", "0.00"}, []string{`float--X=float64(123.45)`, `float--X=float64(-0.05)`}},
		{"DECIMAL(38,4) as FIXED_LEN_BYTE_ARRAY", parquet.Decimal(4, 38, parquet.FixedLenByteArrayType(16)), "float",
			[]any{twos(-123456789, 16), twos(math.MaxInt64, 16)}, []string{"-12345.6789", "922337203685477.5807"}, []string{`float--X=float64(-12345.6789)`}},
		{"DECIMAL(9,2) as INT32, to an integer field", parquet.Decimal(2, 9, parquet.Int32Type), "integer", []any{int32(1200), int32(1250)}, []string{"12.00", "12.50"},
			[]string{`integer--X=int64(12)`, `"12.50\" is not an integer"`}},
		{"DECIMAL(20,0) as BYTE_ARRAY beyond 2^53", parquet.Decimal(0, 20, parquet.ByteArrayType), "integer", []any{twos(1<<60, 9)}, []string{"1152921504606846976"}, []string{`is beyond ±9007199254740991`}},
		{"STRING", parquet.Optional(parquet.String()), "string", []any{"gold", nil, " silver ", "a\x00b", "\xff"}, []string{"gold", "", " silver ", "a\x00b", "\xff"},
			[]string{`string--X=string(gold)`, `string--X=string(silver)`, `has a control character (U+0000)`, `invalid UTF-8 in column \"X\"`}},
		{"STRING to an integer field", parquet.String(), "integer", []any{"12", "twelve"}, []string{"12", "twelve"}, []string{`integer--X=int64(12)`, `is not an integer`}},
		// Dictionary values are checked and converted once a row group
		// (textMemo): every row holding one gets the same verdict.
		{"STRING dictionary-encoded, to an integer field", parquet.Encoded(parquet.String(), &parquet.RLEDictionary), "integer",
			[]any{"12", "twelve", "12", "twelve"}, []string{"12", "twelve", "12", "twelve"}, []string{`integer--X=int64(12)`, `is not an integer`}},
		{"STRING dictionary-encoded", parquet.Optional(parquet.Encoded(parquet.String(), &parquet.RLEDictionary)), "string",
			[]any{"gold", "a\x00b", nil, "gold", "a\x00b"}, []string{"gold", "a\x00b", "", "gold", "a\x00b"},
			[]string{`string--X=string(gold)`, `has a control character (U+0000)`}},
		{"ENUM", parquet.Enum(), "string", []any{"GOLD"}, []string{"GOLD"}, []string{`string--X=string(GOLD)`}},
		{"JSON", parquet.JSON(), "string", []any{`{"a":1}`}, []string{`{"a":1}`}, []string{`string--X=string({"a":1})`}},
		{"BYTE_ARRAY without a type", parquet.Leaf(parquet.ByteArrayType), "string", []any{[]byte("plain")}, []string{"plain"}, []string{`string--X=string(plain)`}},
		{"UUID", parquet.UUID(), "string", []any{uuid}, []string{"00112233-4455-6677-8899-aabbccddeeff"}, []string{`string--X=string(00112233-4455-6677-8899-aabbccddeeff)`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := Mapping{Email: "Email", Custom: []CustomField{{Source: "X", Key: tc.typ + "--X", Type: tc.typ}},
				Destination: Destination{Title: "Ortto", TextField: "str:cm:name"}}
			var pqRows []map[string]any
			var csvRows [][]string
			for i, v := range tc.values {
				email := fmt.Sprintf("p%d@example.com", i)
				pqRows = append(pqRows, map[string]any{"Email": email, "X": v})
				csvRows = append(csvRows, []string{email, tc.csv[i]})
			}
			got := outcome("x.parquet", parquetFile(t, parquet.Group{"Email": parquet.String(), "X": tc.node}, pqRows, 0), m)
			want := outcome("x.csv", csvFile(t, []string{"Email", "X"}, csvRows), m)
			if rowLines(got) != rowLines(want) || !strings.Contains(got, fmt.Sprintf(`stats: rows=%d`, len(tc.values))) {
				t.Errorf("differs from the same values in CSV\n--- got\n%s--- want\n%s", got, want)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("got\n%s\nwant a line with %q", got, w)
				}
			}
		})
	}
}

// nestedRow has a column of each nested kind.
type nestedRow struct {
	Email   string            `parquet:"Email"`
	Tags    []string          `parquet:"Tags,list"`
	Prefs   map[string]string `parquet:"Prefs"`
	Address struct {
		City string `parquet:"City"`
		Geo  struct {
			Lat float64 `parquet:"Lat"`
		} `parquet:"Geo"`
	} `parquet:"Address"`
	Phones []string `parquet:"Phones"` // a bare slice: a repeated column
}

// TestReadParquetFileErrors checks the problems that make a Parquet file
// unusable: each fails the file with a FileError saying what to do.
func TestReadParquetFileErrors(t *testing.T) {
	t.Parallel()
	var nested bytes.Buffer
	w := parquet.NewGenericWriter[nestedRow](&nested)
	row := nestedRow{Email: "a@example.com", Tags: []string{"x"}, Prefs: map[string]string{"a": "b"}, Phones: []string{"1", "2"}}
	row.Address.City, row.Address.Geo.Lat = "Oslo", 59.9
	if _, err := w.Write([]nestedRow{row}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	nestedFile := nested.Bytes()
	bsonFile := parquetFile(t, parquet.Group{"Email": parquet.String(), "Doc": parquet.BSON()},
		[]map[string]any{{"Email": "a@example.com", "Doc": []byte{5, 0, 0, 0, 0}}}, 0)
	good := parquetFile(t, parquet.Group{"Email": parquet.String(), "FirstName": parquet.String()},
		[]map[string]any{{"Email": "a@example.com", "FirstName": "Ann"}}, 0)
	pqRows, _ := people(5000)
	big := parquetFile(t, peopleSchema, pqRows, 1000, parquet.Compression(&parquet.Snappy))
	bigLZ4 := parquetFile(t, peopleSchema, pqRows, 1000, parquet.Compression(&parquet.Lz4Raw))
	bigGzip := parquetFile(t, peopleSchema, pqRows, 1000, parquet.Compression(&parquet.Gzip))
	bigZstd := parquetFile(t, peopleSchema, pqRows, 1000, parquet.Compression(&parquet.Zstd))
	bigBrotli := parquetFile(t, peopleSchema, pqRows, 1000, parquet.Compression(&parquet.Brotli))
	custom := func(source string) Mapping {
		return Mapping{Email: "Email", Custom: []CustomField{{Source: source, Key: "string--X", Type: "string"}}}
	}
	const fix = "; export the value wanted as a column of its own (e.g. SELECT tags[1] AS tag), or map another column\n"
	tests := []struct {
		name string
		data []byte
		m    Mapping
		want string
	}{
		{"a LIST named", nestedFile, custom("Tags"), `column "Tags": column is a LIST, not one value a row (match.custom.Tags)` + fix},
		{"a MAP named", nestedFile, custom("prefs"), `column "Prefs": column is a MAP, not one value a row (match.custom.prefs)` + fix},
		{"a struct named", nestedFile, Mapping{Email: "Email", FirstName: "Address"}, `column "Address": column is a group of columns (a struct), not one value a row (match.firstName)` + fix},
		{"a repeated column named", nestedFile, custom("Phones"), `column "Phones": column is a repeated column, not one value a row (match.custom.Phones)` + fix},
		{"a column inside a struct named", nestedFile, custom("address.geo.lat"),
			`column "address.geo.lat": column is inside a group of columns (a struct) "Address" (match.custom.address.geo.lat); segpilot maps top-level columns only; export the value as a column of its own (e.g. SELECT address.geo.lat AS …), and map that` + "\n"},
		{"a type not read", bsonFile, custom("Doc"), `column "Doc": column is of Parquet type BSON, which segpilot does not read (match.custom.Doc); cast it to a string or a number in the export, or map another column` + "\n"},
		{"a column missing", good, Mapping{Email: "Email", LastName: "LastName"},
			`column "LastName": column not found (match.lastName); the file's columns are "Email", "FirstName"; fix match.lastName in the export's configuration or the file's header` + "\n"},
		{"cut short", good[:len(good)-20], emailOnly, `not a readable Parquet file (`},
		{"only the magic", []byte("PAR1"), emailOnly, `not a readable Parquet file (`},
		{"damaged in its metadata", damage(good, 4, len(good)/2), emailOnly, `not a readable Parquet file (`},
		{"damaged in a page", damagedPage(t, big), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: SNAPPY, 4351 bytes to 19374: a compressed page does not decode into the size its header names (it says it decodes to 1500916))`},
		// The library doubles its buffer for an LZ4 page that does not
		// decode until memory runs out (fuzzing: 32 GiB asked for by 7 KB).
		{"damaged in an LZ4 page", damagedPage(t, bigLZ4), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: LZ4_RAW, 3714 bytes to 19374: a compressed page does not decode into the size its header names (a damaged block))`},
		// field 15 a list (9) of UUIDs (13), its size a varint: 2^24
		{"a page header claiming more than its chunk holds", oversizedPageHeader(t, good, []byte{0xf9, 0xfd, 0x80, 0x80, 0x80, 0x08}), emailOnly,
			`not a readable Parquet file (page header at byte 0 of its column chunk: a list of 16777216 elements, 104 bytes left: more than the bytes left can hold)`},
		// field 15 a list (9) of doubles (7), 100 of them: 800 bytes in a
		// chunk of 104; the library reads a double past the end as zero
		// and goes on (fuzzing: a map of such lists, 3.4 s for 1.5 KB).
		{"a page header's list running past its chunk", oversizedPageHeader(t, good, []byte{0xf9, 0xf7, 0x64}), emailOnly,
			`not a readable Parquet file (page header at byte 0 of its column chunk: a value runs past the bytes left)`},
		// field 15 binary (8), its length a varint: 2^28
		{"a page header claiming a value longer than its chunk", oversizedPageHeader(t, good, []byte{0xf8, 0x80, 0x80, 0x80, 0x80, 0x01}), emailOnly,
			`not a readable Parquet file (page header at byte 0 of its column chunk: a value runs past the bytes left)`},
		// The library's Thrift decoder makes a list's slice before it reads
		// an element: 2^24 row groups are 2 GB.
		{"metadata claiming more row groups than it holds", withFooter(good, []byte{0x49, 0xfc, 0x80, 0x80, 0x80, 0x08, 0x00, 0x00}), emailOnly,
			`not a readable Parquet file (the file's metadata (its footer): a list of 16777216 elements, 2 bytes left: more than the bytes left can hold)`},
		// 0x20 ends the schema element for the library (type 0 is a stop,
		// whatever the delta): the row groups' list after it is the file's.
		{"metadata claiming row groups after a stop with a delta", withFooter(good, []byte{0x15, 0x02, 0x19, 0x1c, 0x20, 0x29, 0xfc, 0x80, 0x80, 0x80, 0x08, 0x00, 0x00}), emailOnly,
			`not a readable Parquet file (the file's metadata (its footer): a list of 16777216 elements, 2 bytes left: more than the bytes left can hold)`},
		{"metadata nested deeper than any Parquet writes", withFooter(good, append(bytes.Repeat([]byte{0x1c}, 40), make([]byte, 41)...)), emailOnly,
			`not a readable Parquet file (the file's metadata (its footer): values nested more than 32 deep)`},
		{"metadata claiming a value longer than it is", withFooter(good, []byte{0x15, 0x02, 0x28, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}), emailOnly,
			`not a readable Parquet file (the file's metadata (its footer): a value runs past the bytes left)`},
		// The library allocates a page's claimed sizes before it reads
		// the page (fuzzing: 1.9 GB asked for by 1.3 KB).
		{"a page claiming more bytes than its chunk has", pageClaiming(t, big, compressedSize, 1<<30, 0), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: 1073741824 bytes, 4351 left: a page header claims more bytes than its column chunk has left)`},
		{"a page claiming more bytes than the file has", pageClaiming(t, good, compressedSize, 1<<20, 1<<30), emailOnly,
			`not a readable Parquet file (page at byte 0 of its column chunk: 1048576 bytes, 452 left: a page header claims more bytes than its column chunk has left)`},
		// The library allocates levels, offsets and values by num_values
		// before it decodes one: 2^30 is 4 GB of offsets.
		{"a page claiming more values than segpilot reads in one", pageValues(t, big, 1<<30), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: 1073741824 values: more than the 4194304 values segpilot reads in one page: write the file with smaller pages)`},
		// The library reads a chunk of negative length to the file's end.
		{"a column chunk of negative length", chunkLength(t, big, -100), defaultMapping,
			`not a readable Parquet file (column chunk at byte 4: -100 bytes: a column chunk's length cannot be negative)`},
		{"a snappy page claiming to decode to more", pageClaiming(t, big, uncompressedSize, 1<<30, 0), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: SNAPPY, 4351 bytes to 1073741824: a compressed page does not decode into the size its header names (it says it decodes to 19374))`},
		{"a gzip page claiming to decode to more", pageClaiming(t, bigGzip, uncompressedSize, 1<<30, 0), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: GZIP, 2256 bytes to 1073741824: a compressed page does not decode into the size its header names (it decodes to 19374))`},
		{"a zstd page claiming to decode to more", pageClaiming(t, bigZstd, uncompressedSize, 1<<30, 0), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: ZSTD, 1044 bytes to 1073741824: a compressed page does not decode into the size its header names (it decodes to 19374))`},
		{"a brotli page claiming to decode to more", pageClaiming(t, bigBrotli, uncompressedSize, 1<<30, 0), defaultMapping,
			`not a readable Parquet file (page at byte 0 of its column chunk: BROTLI, 3080 bytes to 1073741824: a compressed page does not decode into the size its header names (it decodes to 19374))`},
		{"encrypted", append([]byte("PARE"), good[4:]...), emailOnly,
			`this is an encrypted Parquet file; export it without Parquet encryption (S3's own encryption is fine)` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := outcome("x.parquet", tc.data, tc.m)
			if !strings.Contains(got, "error (FileError=true): segments/test/x.parquet: "+tc.want) || (strings.Contains(got, "record") && !strings.Contains(tc.name, "page")) {
				t.Errorf("got\n%s\nwant only the error %q", got, tc.want)
			}
		})
	}
	t.Run("nested columns not named are not read", func(t *testing.T) {
		t.Parallel()
		got := outcome("x.parquet", nestedFile, Mapping{Email: "Email"})
		if want := "record 1: email=\"a@example.com\" first=\"\" last=\"\"\nstats: rows=1 valid=1 rejected=0 format=\"parquet\" compressed=false delimiter=\"\"\n"; got != want {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
	})
}

// oversizedPageHeader starts the first page header of data's first column
// with field, one the library does not know. Such a field claiming a list
// of 2^24 UUIDs the library skips element by element, long past the
// chunk's end; one claiming a value of 2^28 bytes it allocates; unless the
// reader refuses the header first (parquet_headers.go).
func oversizedPageHeader(t *testing.T, data []byte, field []byte) []byte {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	at := f.Metadata().RowGroups[0].Columns[0].MetaData.DataPageOffset
	d := bytes.Clone(data)
	copy(d[at:], field)
	return d
}

// The page header's fields pageClaiming sets.
const (
	uncompressedSize = 2
	compressedSize   = 3
)

// pageClaiming sets field (a size) of the first page header of data's
// first column to size; with chunk > 0 it says the column chunk is chunk
// bytes long.
func pageClaiming(t *testing.T, data []byte, field int, size int32, chunk int64) []byte {
	t.Helper()
	return setFirstHeaderVarint(t, data, chunk, func(d []byte, at int) int {
		// The header starts with three i32 fields: type, uncompressed_page_size, compressed_page_size.
		pos := at
		for id := 1; id < field; id++ {
			if d[pos] != 0x15 {
				t.Fatalf("page header at %d: field %d is 0x%x, not an i32", at, id, d[pos])
			}
			pos += 1 + varintLen(d[pos+1:])
		}
		return pos + 1
	}, size)
}

// pageValues sets num_values in the first page header of data's first
// column.
func pageValues(t *testing.T, data []byte, values int32) []byte {
	t.Helper()
	return setFirstHeaderVarint(t, data, 0, func(d []byte, at int) int {
		// i32 fields (type, sizes, crc) up to the page's own header, a
		// struct whose first field is num_values.
		pos := at
		for d[pos]&0xf == 5 {
			pos += 1 + varintLen(d[pos+1:])
		}
		if d[pos]&0xf != 12 || d[pos+1] != 0x15 {
			t.Fatalf("page header at %d: 0x%x 0x%x where its page's header should start with num_values", at, d[pos], d[pos+1])
		}
		return pos + 2
	}, values)
}

// setFirstHeaderVarint sets the i32 varint that find finds in the first
// page header of data's first column to v. The bytes after it move, and
// the footer with them: the chunk's length (or chunk, when > 0) and every
// later offset, so the rest of the file still reads.
func setFirstHeaderVarint(t *testing.T, data []byte, chunk int64, find func(d []byte, at int) int, v int32) []byte {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	meta := f.Metadata()
	m := &meta.RowGroups[0].Columns[0].MetaData
	at := m.DataPageOffset
	if m.DictionaryPageOffset != 0 {
		at = m.DictionaryPageOffset
	}
	d := bytes.Clone(data)
	pos := find(d, int(at))
	n := varintLen(d[pos:])
	enc := binary.AppendUvarint(nil, uint64(v)<<1) // zigzag, v >= 0
	d = append(append(d[:pos:pos], enc...), d[pos+n:]...)
	delta := int64(len(enc) - n)
	moved := func(off *int64) {
		if *off > at {
			*off += delta
		}
	}
	for g := range meta.RowGroups {
		rg := &meta.RowGroups[g]
		moved(&rg.FileOffset)
		for c := range rg.Columns {
			cc := &rg.Columns[c]
			moved(&cc.FileOffset)
			moved(&cc.MetaData.DataPageOffset)
			moved(&cc.MetaData.DictionaryPageOffset)
			moved(&cc.MetaData.IndexPageOffset)
		}
	}
	m.TotalCompressedSize += delta
	if chunk > 0 {
		m.TotalCompressedSize = chunk
	}
	footer, err := thrift.Marshal(new(thrift.CompactProtocol), meta)
	if err != nil {
		t.Fatal(err)
	}
	return withFooter(d, footer)
}

// chunkLength says in data's footer that its first column chunk is n bytes long.
func chunkLength(t *testing.T, data []byte, n int64) []byte {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	meta := f.Metadata()
	meta.RowGroups[0].Columns[0].MetaData.TotalCompressedSize = n
	footer, err := thrift.Marshal(new(thrift.CompactProtocol), meta)
	if err != nil {
		t.Fatal(err)
	}
	return withFooter(data, footer)
}

// withFooter is the Parquet file data with footer as its metadata.
func withFooter(data, footer []byte) []byte {
	end := len(data) - 8 - int(binary.LittleEndian.Uint32(data[len(data)-8:]))
	d := binary.LittleEndian.AppendUint32(append(bytes.Clone(data[:end]), footer...), uint32(len(footer)))
	return append(d, "PAR1"...)
}

func varintLen(b []byte) int {
	n := 1
	for b[n-1]&0x80 != 0 {
		n++
	}
	return n
}

// damagedPage flips 64 bytes of the first page of data's first column,
// just past its header.
func damagedPage(t *testing.T, data []byte) []byte {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	at := f.Metadata().RowGroups[0].Columns[0].MetaData.DataPageOffset
	s := thriftScan{r: bufio.NewReader(bytes.NewReader(data[at:])), left: int64(len(data)) - at}
	page, err := s.pageHeader()
	if err != nil || page.size < 64 {
		t.Fatalf("page header at %d: page of %d bytes, %v", at, page.size, err)
	}
	from := int(at) + (len(data) - int(at) - int(s.left))
	return damage(data, from, from+64)
}

// damage flips data[from:to].
func damage(data []byte, from, to int) []byte {
	d := bytes.Clone(data)
	for i := from; i < to; i++ {
		d[i] ^= 0x5a
	}
	return d
}

var emailOnly = Mapping{Email: "Email"}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

type errReaderAt struct {
	r   io.ReaderAt
	at  int64 // reads past this offset fail
	err error
}

func (e errReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > e.at {
		return 0, e.err
	}
	return e.r.ReadAt(p, off)
}

// TestReadParquetReadErrors checks that a failing source is reported as a
// read error, not as a damaged file, and that cancelling stops the read.
func TestReadParquetReadErrors(t *testing.T) {
	t.Parallel()
	pqRows, _ := people(5000)
	data := parquetFile(t, peopleSchema, pqRows, 1000)
	ok := func(Record) error { return nil }
	okReject := func(Rejection) error { return nil }
	opts := Options{Name: "x.parquet", Mapping: defaultMapping, TempDir: t.TempDir()}
	broken := errors.New("connection reset")
	for _, tc := range []struct {
		name string
		read func() (Stats, error)
	}{
		{"the footer", func() (Stats, error) {
			return ReadAt(context.Background(), errReaderAt{bytes.NewReader(data), int64(len(data)) - 8, broken}, int64(len(data)), opts, ok, okReject)
		}},
		{"a page", func() (Stats, error) {
			return ReadAt(context.Background(), errReaderAt{bytes.NewReader(data), int64(len(data)) / 2, broken}, int64(len(data)), opts, ok, okReject)
		}},
		{"a stream being copied to disk", func() (Stats, error) {
			return Read(context.Background(), io.MultiReader(bytes.NewReader(data[:len(data)/2]), errReader{broken}), opts, ok, okReject)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.read()
			var fe *FileError
			if !errors.Is(err, broken) || errors.As(err, &fe) {
				t.Fatalf("got %v, want the source error unwrapped to connection reset", err)
			}
		})
	}
	t.Run("cancelled mid-file", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := Read(ctx, bytes.NewReader(data), opts, func(r Record) error {
			if r.Row >= 10 {
				cancel()
			}
			return nil
		}, okReject)
		if !errors.Is(err, context.Canceled) || st.Rows > 2*ctxEvery {
			t.Fatalf("got %v after %d rows, want context.Canceled soon after row 10", err, st.Rows)
		}
	})
	t.Run("the spooled copy is gone", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		o := opts
		o.TempDir = dir
		if _, err := Read(context.Background(), io.MultiReader(bytes.NewReader(data)), o, ok, okReject); err != nil {
			t.Fatal(err)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) > 0 {
			t.Fatalf("left behind: %v", left)
		}
	})
}

// TestReadParquetMemoryIsFlat reads a 200,000-row file of 8 row groups, in
// place and streamed, and checks the live heap does not grow with it.
func TestReadParquetMemoryIsFlat(t *testing.T) {
	const rows = 200_000
	path := filepath.Join(t.TempDir(), "big.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Repeat("n", 100)
	g := parquet.Group{"Email": parquet.String(), "FirstName": parquet.String(), "LastName": parquet.String(), "Notes": parquet.String()}
	writeParquet(t, f, g, func(write func(map[string]any)) {
		for i := range rows {
			write(map[string]any{"Email": fmt.Sprintf("user%d@example.com", i), "FirstName": fmt.Sprintf("First%d", i),
				"LastName": fmt.Sprintf("Last%d", i), "Notes": notes})
		}
	}, rows/8, parquet.Compression(&parquet.Snappy))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	live := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	for _, streamed := range []bool{false, true} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = f
		if streamed {
			r = io.MultiReader(f) // not seekable: copied to disk first
		}
		m := Mapping{Email: "Email", FirstName: "FirstName", Custom: []CustomField{{Source: "Notes", Key: "string--Notes", Type: "string"}}}
		base := live()
		var peak uint64
		st, err := Read(context.Background(), r, Options{Name: "big.parquet", Mapping: m, TempDir: t.TempDir()},
			func(r Record) error {
				if r.Row%20_000 == 0 {
					peak = max(peak, live())
				}
				return nil
			},
			func(r Rejection) error { return fmt.Errorf("unexpected rejection %+v", r) })
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.Rows != rows || st.Valid != rows {
			t.Fatalf("stats %+v, want %d valid rows", st, rows)
		}
		const bound = 8 << 20
		t.Logf("streamed %t: heap in use: %d bytes before, %d at most while reading", streamed, base, peak)
		if peak > base+bound {
			t.Errorf("streamed %t: heap in use grew from %d to %d bytes while reading, want under +%d", streamed, base, peak, bound)
		}
	}
}
