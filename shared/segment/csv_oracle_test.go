package segment

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strings"
	"testing"
)

// refRead is Read as it was before CSV was read in parallel blocks: one
// encoding/csv reader over the whole stream. It is the oracle the block
// reader must match byte for byte.
func refRead(data []byte, opts Options, emit func(Record) error, reject func(Rejection) error) (Stats, error) {
	fields, err := compileMapping(opts.Mapping)
	if err != nil {
		return Stats{}, fmt.Errorf("%s: %w", opts.Name, err)
	}
	rd := &reader{ctx: context.Background(), name: opts.Name, fields: fields, emit: emit, reject: reject}
	// The stream is opened as Read opens it: the oracle is about records.
	br, pq, err := rd.open(bytes.NewReader(data))
	if err != nil || pq {
		return rd.st, err // Parquet is not read in blocks
	}
	first, lines, err := skipPrefix(br)
	if err == io.EOF {
		return rd.st, &FileError{File: rd.name, Problem: "file is empty", Hint: "check the export that wrote it"}
	}
	if err != nil {
		return rd.st, rd.streamError(err, 0)
	}
	if first == '[' || first == '{' {
		return rd.st, nil // JSON is not read in blocks
	}
	rd.st.Format = "csv"
	return rd.st, rd.refReadCSV(br, lines)
}

func (rd *reader) refReadCSV(br *bufio.Reader, prefixLines int) error {
	delim, err := detectDelimiter(br, rd.fields[0].source)
	if err != nil {
		return rd.streamError(err, 0)
	}
	rd.st.Delimiter = string(delim)
	// What the reader has read, to tell an unterminated quote at the end
	// from text after a closing quote on the last line.
	var seen bytes.Buffer
	cr := csv.NewReader(io.TeeReader(br, &seen))
	cr.Comma = delim
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	openQuote := func(start int64) bool {
		return atEOF(br) && unterminated(seen.Bytes()[start:], byte(delim))
	}
	header, err := cr.Read()
	if err != nil {
		return rd.csvError(err, 0, prefixLines, openQuote(0))
	}
	header = append([]string(nil), header...)
	if err := rd.matchHeader(header, "the header has"); err != nil {
		return err
	}
	rd.bounded.mark()
	cells := make([]cell, len(rd.fields))
	for {
		start := cr.InputOffset()
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		row := rd.st.Rows + 1
		if err != nil {
			return rd.csvError(err, row, prefixLines, openQuote(start))
		}
		rd.bounded.mark()
		rd.st.Rows++
		if len(rec) != len(header) {
			email := ""
			if c := rd.fields[0].col; c < len(rec) {
				email = reportEmail(cell{s: rec[c], present: true})
			}
			if err := rd.rejectRow(row, email, fmt.Sprintf("row has %d fields, header has %d", len(rec), len(header))); err != nil {
				return err
			}
			continue
		}
		for i := range rd.fields {
			cells[i] = cell{s: rec[rd.fields[i].col], present: true}
		}
		p, why := buildProfile(rd.fields, cells)
		if why != "" {
			if err := rd.rejectRow(row, reportEmail(cells[0]), why); err != nil {
				return err
			}
			continue
		}
		rd.st.Valid++
		if err := rd.emit(Record{Row: row, Profile: p}); err != nil {
			return err
		}
	}
}

// transcript renders every event of one read.
func transcript(read func(emit func(Record) error, reject func(Rejection) error) (Stats, error)) string {
	var b bytes.Buffer
	st, err := read(
		func(r Record) error {
			fmt.Fprintf(&b, "record %d: %q %q %q %#v\n", r.Row, r.Profile.Email, r.Profile.FirstName, r.Profile.LastName, r.Profile.Custom)
			return nil
		},
		func(r Rejection) error {
			fmt.Fprintf(&b, "reject %d: %q %q\n", r.Row, r.Email, r.Reason)
			return nil
		})
	fmt.Fprintf(&b, "stats %+v\nerror %v\n", st, err)
	return b.String()
}

// checkBlocksMatchOracle reads data with several block sizes and compares
// each transcript with the oracle's. Where the oracle stops at a quote in
// an unquoted field, which the reader takes as text (csvquote.go), the
// reader must agree with it on every row before, and the block sizes must
// agree with one block holding the whole file.
func checkBlocksMatchOracle(t *testing.T, data []byte, m Mapping) {
	t.Helper()
	opts := Options{Name: "f.csv", Mapping: m}
	want := transcript(func(emit func(Record) error, reject func(Rejection) error) (Stats, error) {
		return refRead(data, opts, emit, reject)
	})
	if !bytes.Contains([]byte(want), []byte("Format:csv")) {
		return
	}
	if bytes.Contains([]byte(want), []byte(`bare " in non-quoted-field`)) {
		whole := transcript(func(emit func(Record) error, reject func(Rejection) error) (Stats, error) {
			return readBlocks(context.Background(), bytes.NewReader(data), opts, emit, reject, len(data)+1)
		})
		rows := want[:strings.Index(want, "stats ")]
		if !strings.HasPrefix(whole, rows) {
			t.Fatalf("the rows before a bare quote differ from one reader over the stream\n--- got\n%s--- want them to start with\n%s", whole, rows)
		}
		want = whole
	}
	for _, size := range []int{1, 7, 64, csvBlockSize} {
		got := transcript(func(emit func(Record) error, reject func(Rejection) error) (Stats, error) {
			return readBlocks(context.Background(), bytes.NewReader(data), opts, emit, reject, size)
		})
		if got != want {
			t.Fatalf("block size %d: read differs from one reader over the stream\n--- got\n%s--- want\n%s", size, got, want)
		}
	}
}

func TestCSVBlocksMatchOracle(t *testing.T) {
	t.Parallel()
	for _, c := range loadCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkBlocksMatchOracle(t, c.data, c.mapping)
		})
	}
	m := Mapping{Email: "Email", FirstName: "FirstName", Custom: []CustomField{{Source: "Orders", Key: "integer--Orders"}}}
	for _, s := range []string{
		"Email,FirstName,Orders\na@x.com,Ann,1\r\nb@x.com,Bo,2\r\n\r\n\nc@x.com,\"C\r\ny\",3\r",
		"Email,FirstName,Orders\na@x.com,Ann,1\nb@x.com,\"Bo\"x,2\nc@x.com,C,3\n",
		"Email,FirstName,Orders\na@x.com,Ann,1\nb@x.com,B\"o,2\nc@x.com,C,3\n",
		"Email,FirstName,Orders\na@x.com,Ann,1\nb@x.com,\"Bo,2\nc@x.com,C,3\n",
		"Email,FirstName,Orders\na@x.com,Ann,1\nb@x.com,\"Bo\"x,2",
		"Email,FirstName,Orders\na@x.com,Ann,1\nb@x.com,\"Bo\"\"\",2\n\"c@x.com\",C,3,4\n\r\n\r",
		"Email;FirstName;Orders\na@x.com;\"A;n\n\"\"n\";1\n\nb@x.com;Bo;x\n",
		"\"Email\",\"First\nName\",Orders\na@x.com,Ann,1\n",
		"\"Email\"x,FirstName,Orders\na@x.com,Ann,1\n",
		"Email,FirstName,Orders\n\"a@x.com\",Ann,1\n",
	} {
		checkBlocksMatchOracle(t, []byte(s), m)
	}
}

func FuzzCSVBlocksMatchOracle(f *testing.F) {
	seedCorpus(f, func(name string) bool { return !bytes.Contains([]byte(name), []byte(".json")) })
	f.Add([]byte("Email,FirstName,Orders\na@x.com,\"A\r\nn\",1\r\nb@x.com,B\"o,2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkBlocksMatchOracle(t, data, fuzzMapping)
	})
}

// TestCSVBlocksStayBounded feeds records that end exactly where reads end,
// the case where a splitter must read on to cut: blocks must not grow.
func TestCSVBlocksStayBounded(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("a,b\n"), 4<<20)
	sp := &csvSplitter{r: bytes.NewReader(data), bounded: &boundedReader{}, blockSize: csvBlockSize, free: make(chan *csvBlock, 1)}
	sp.spare = sp.newBlock(0)
	sp.buf = sp.spare.data
	total := 0
	for {
		b := sp.next(total == 0)
		total += len(b.data)
		if n := len(b.data); n > csvBlockSize+bufSize || cap(b.data) > 2*(csvBlockSize+bufSize) {
			t.Fatalf("block of %d bytes (capacity %d), want at most %d", n, cap(b.data), csvBlockSize+bufSize)
		}
		if b.final || b.err != nil {
			break
		}
		sp.free <- b
	}
	if total != len(data) {
		t.Fatalf("blocks hold %d bytes, want %d", total, len(data))
	}
}
