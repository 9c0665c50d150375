package segment

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

const (
	bufSize = 64 << 10
	// maxRecordLen bounds the memory one row may take. Rows this large are
	// not contact data; most likely the file is not what its name says.
	maxRecordLen = 16 << 20
	// ctxEvery is how many rows pass between cancellation checks.
	ctxEvery = 1024
)

// Options tell Read how to read one file.
type Options struct {
	Name    string // file name or S3 key: used in every error message and as a format hint
	Mapping Mapping
	// TempDir is where a Parquet file streamed to Read (not read in place,
	// see parquet.go) is copied to be read; "" is os.TempDir().
	TempDir string
}

// Stats sum up one read.
type Stats struct {
	Rows       int    `json:"rows"`
	Valid      int    `json:"valid"`
	Rejected   int    `json:"rejected"`
	Format     string `json:"format"` // "csv", "jsonl", "json" or "parquet"
	Compressed bool   `json:"compressed"`
	Delimiter  string `json:"delimiter,omitempty"` // csv only
}

// FileError is a problem that makes the whole file unusable: nothing from it
// should be sent.
type FileError struct {
	File    string
	Row     int    // 1-based data row; 0 when not row-specific
	Column  string // the column or mapping source concerned, if any
	Problem string
	Hint    string // what the user can do about it
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	b.WriteString(": ")
	if e.Row > 0 {
		fmt.Fprintf(&b, "row %d: ", e.Row)
	}
	if e.Column != "" {
		fmt.Fprintf(&b, "column %q: ", e.Column)
	}
	b.WriteString(e.Problem)
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Read streams the file, calling emit for each valid profile and reject for
// each rejected row, in row order. A file-level problem returns *FileError
// and stops (the caller sends nothing for that file). An error returned by
// emit or reject stops the read and is returned wrapped. A mapping that can
// never work returns an error wrapping ErrBadMapping. A Parquet file is
// read in place when r is an io.ReaderAt and io.Seeker not yet read (an
// *os.File), else from a copy in Options.TempDir: see parquet.go.
func Read(ctx context.Context, r io.Reader, opts Options, emit func(Record) error, reject func(Rejection) error) (Stats, error) {
	return readBlocks(ctx, r, opts, emit, reject, csvBlockSize)
}

// readBlocks is Read cutting CSV into blocks of about blockSize bytes.
func readBlocks(ctx context.Context, r io.Reader, opts Options, emit func(Record) error, reject func(Rejection) error, blockSize int) (Stats, error) {
	name := opts.Name
	if name == "" {
		name = "segment file"
	}
	fields, err := compileMapping(opts.Mapping)
	if err != nil {
		return Stats{}, fmt.Errorf("%s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, fmt.Errorf("reading %s: %w", name, err)
	}
	rd := &reader{ctx: ctx, name: name, fields: fields, emit: emit, reject: reject, blockSize: blockSize, tempDir: opts.TempDir}
	rd.ra, rd.size, _ = randomAccess(r)
	err = rd.read(r)
	return rd.st, err
}

// reader holds the state of one Read.
type reader struct {
	ctx     context.Context
	name    string
	fields  []field
	emit    func(Record) error
	reject  func(Rejection) error
	st      Stats
	bounded *boundedReader

	blockSize int // CSV block size; see csvblock.go

	// ra is Read's reader when it can be read at any offset (size bytes):
	// a Parquet file is then read in place. tempDir is where one is copied
	// otherwise.
	ra      io.ReaderAt
	size    int64
	tempDir string
}

func (rd *reader) read(r io.Reader) error {
	br, pq, err := rd.open(r)
	if err != nil {
		return err
	}
	if pq {
		return rd.readParquetFrom(br)
	}
	first, lines, err := skipPrefix(br)
	if err == io.EOF {
		return &FileError{File: rd.name, Problem: "file is empty", Hint: "check the export that wrote it"}
	}
	if err != nil {
		return rd.streamError(err, 0)
	}
	switch first {
	case '[':
		rd.st.Format = "json"
		return rd.readJSON(br, lines, true)
	case '{':
		rd.st.Format = "jsonl"
		return rd.readJSON(br, lines, false)
	default:
		rd.st.Format = "csv"
		return rd.readCSV(br, lines)
	}
}

// open undoes gzip, refuses content no reader could use, and returns the
// content to read: Parquet (pq), or text with its line ends made line
// feeds.
func (rd *reader) open(r io.Reader) (br *bufio.Reader, pq bool, err error) {
	src := bufio.NewReaderSize(sourceReader{r}, bufSize)
	var in io.Reader = src
	magic, err := src.Peek(2)
	if err != nil && err != io.EOF {
		return nil, false, rd.streamError(err, 0)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, false, rd.streamError(gzipError(err), 0)
		}
		// No Close: gzip.Reader holds no resources and Close would only
		// repeat the error Read already returned.
		in = gzipReader{zr}
		rd.st.Compressed = true
	}
	rd.bounded = &boundedReader{r: in}
	br = bufio.NewReaderSize(rd.bounded, bufSize)
	if err := rd.checkEncoding(br); err != nil {
		return nil, false, err
	}
	if head, _ := br.Peek(len(parquetMagic)); bytes.Equal(head, parquetMagic) {
		return br, true, nil
	}
	crOnly, err := crLineEnds(br)
	if err != nil {
		return nil, false, rd.streamError(err, 0)
	}
	if crOnly {
		br = bufio.NewReaderSize(crToLF{br}, bufSize)
	}
	return br, false, nil
}

// crLineEnds reports whether the text ends its lines with a carriage
// return alone, as Excel on old Macs writes CSV: its first 64 KiB have a
// carriage return and no line feed. Such text is read with each carriage
// return taken for a line feed, inside quoted fields too (where Excel also
// writes them), so rows split and errors name lines as in any other file.
func crLineEnds(br *bufio.Reader) (bool, error) {
	head, err := br.Peek(bufSize)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return false, err
	}
	return bytes.IndexByte(head, '\n') < 0 && bytes.IndexByte(head, '\r') >= 0, nil
}

// crToLF turns every carriage return into a line feed.
type crToLF struct{ r io.Reader }

func (c crToLF) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	b := p[:n]
	for i := bytes.IndexByte(b, '\r'); i >= 0; i = bytes.IndexByte(b, '\r') {
		b[i] = '\n'
		b = b[i+1:]
	}
	return n, err
}

// checkEncoding refuses, with what to do, content that would otherwise
// read as a header of escaped bytes: a second gzip layer, or UTF-16 text.
func (rd *reader) checkEncoding(br *bufio.Reader) error {
	head, err := br.Peek(512)
	if err != nil && err != io.EOF {
		// bufio hands a read error out once: report it now.
		if e := rd.streamError(err, 0); e != nil {
			return e
		}
		return fmt.Errorf("reading %s: %w", rd.name, err)
	}
	switch {
	case rd.st.Compressed && len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return &FileError{File: rd.name, Problem: "file is gzip-compressed twice",
			Hint: "decompress it once (gunzip) and upload the result"}
	case looksUTF16(head):
		return &FileError{File: rd.name, Problem: "file is UTF-16 encoded",
			Hint: "save or export it as UTF-8 (in Excel: CSV UTF-8) and upload it again"}
	case bytes.HasPrefix(head, []byte("PARE")):
		return &FileError{File: rd.name, Problem: "this is an encrypted Parquet file",
			Hint: "export it without Parquet encryption (S3's own encryption is fine)"}
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		if inner := zipFirstName(head); isDataFileName(inner) {
			return &FileError{File: rd.name, Problem: fmt.Sprintf("this is a ZIP archive (its first file is %q)", shorten(inner)),
				Hint: "upload the file inside it, unzipped or gzipped"}
		}
		return spreadsheetError(rd.name)
	case bytes.HasPrefix(head, []byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}):
		return spreadsheetError(rd.name)
	}
	return nil
}

// wrappedRows reports, for the first value of JSON Lines (raw, an object
// without the email key), whether it is the whole file and keeps its rows
// in an array (an API's answer saved as it is: {"data":[…]}): then reading
// on would make one row without an email, and nothing would be sent.
func (rd *reader) wrappedRows(raw []byte, dec *json.Decoder) error {
	path := rowsKey(raw)
	if path == "" || dec.More() {
		return nil
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil // what follows is reported as it is read
	}
	return wrappedError(rd.name, path)
}

func wrappedError(name, path string) *FileError {
	return &FileError{File: name, Problem: fmt.Sprintf("the file is one JSON object; its rows are under %q", shorten(path)),
		Hint: "export the array itself, or JSON Lines"}
}

// rowsKey returns the key (a.b when nested) of the first array in the JSON
// object starting data that is empty or holds objects, looking two levels
// into nested objects; "" when there is none. data may be cut short: what
// it holds is looked at.
func rowsKey(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	key, _ := objectRowsKey(dec, "", 0)
	return key
}

// objectRowsKey reads the members of the object whose '{' dec just read,
// up to such an array or through the object's '}'. ok is false when dec
// failed (the data was cut short or is not JSON).
func objectRowsKey(dec *json.Decoder, prefix string, depth int) (key string, ok bool) {
	for dec.More() {
		k, err := dec.Token()
		name, isKey := k.(string)
		if err != nil || !isKey {
			return "", false
		}
		v, err := dec.Token()
		if err != nil {
			return "", false
		}
		switch v {
		case json.Delim('['):
			if !dec.More() {
				return prefix + name, true // an empty array: the rows of an empty export
			}
			first, err := dec.Token()
			if err != nil {
				return "", false
			}
			if first == json.Delim('{') {
				return prefix + name, true
			}
			depth := 1
			if first == json.Delim('[') {
				depth++
			}
			if !skipRest(dec, depth) {
				return "", false
			}
		case json.Delim('{'):
			if depth < 2 {
				if key, ok := objectRowsKey(dec, prefix+name+".", depth+1); key != "" || !ok {
					return key, ok
				}
			} else if !skipRest(dec, 1) {
				return "", false
			}
		}
	}
	_, err := dec.Token() // the object's '}'
	return "", err == nil
}

// skipRest reads on until depth arrays or objects, opened before, are
// closed; false when dec failed.
func skipRest(dec *json.Decoder, depth int) bool {
	for depth > 0 {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('['), json.Delim('{'):
			depth++
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
	return true
}

// spreadsheetError is the error for a workbook uploaded as it is: .xlsx,
// .numbers and .ods are ZIP archives, .xls an OLE2 compound file.
func spreadsheetError(name string) *FileError {
	return &FileError{File: name, Problem: "this is a spreadsheet: export it as CSV",
		Hint: "in Excel: File › Save As › CSV UTF-8; in Numbers: File › Export To › CSV"}
}

// zipFirstName returns the name of the first file of the ZIP archive that
// starts with head (from its local file header), or "".
func zipFirstName(head []byte) string {
	const nameAt = 30
	if len(head) < nameAt {
		return ""
	}
	n := int(head[26]) | int(head[27])<<8
	return string(head[nameAt:min(nameAt+n, len(head))])
}

// isDataFileName reports whether a file inside a ZIP archive is named like
// a segment file rather than a part of a spreadsheet.
func isDataFileName(name string) bool {
	name = strings.ToLower(name)
	for _, ext := range []string{".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".gz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// looksUTF16 reports whether a file starting with head is UTF-16: it has a
// UTF-16 byte order mark (neither byte can start UTF-8), or every other byte
// is mostly zero, as in UTF-16 text of Latin letters. A stray NUL in UTF-8
// text does not come close.
func looksUTF16(head []byte) bool {
	if bytes.HasPrefix(head, []byte{0xff, 0xfe}) || bytes.HasPrefix(head, []byte{0xfe, 0xff}) {
		return true
	}
	pairs := len(head) / 2
	if pairs < 2 {
		return false
	}
	var zeros [2]int // at even and odd offsets
	for i := range 2 * pairs {
		if head[i] == 0 {
			zeros[i%2]++
		}
	}
	hi, lo := max(zeros[0], zeros[1]), min(zeros[0], zeros[1])
	return 2*hi >= pairs && 8*lo <= pairs
}

// row validates one data row's mapped cells and hands the outcome on.
func (rd *reader) row(row int, cells []cell) error {
	if row%ctxEvery == 0 {
		if err := rd.ctx.Err(); err != nil {
			return fmt.Errorf("reading %s: %w", rd.name, err)
		}
	}
	p, why := buildProfile(rd.fields, cells)
	if why != "" {
		return rd.rejectRow(row, reportEmail(cells[0]), why)
	}
	rd.st.Valid++
	if err := rd.emit(Record{Row: row, Profile: p}); err != nil {
		return fmt.Errorf("%s: row %d: %w", rd.name, row, err)
	}
	return nil
}

func (rd *reader) rejectRow(row int, email, why string) error {
	rd.st.Rejected++
	if err := rd.reject(Rejection{Row: row, Email: email, Reason: why}); err != nil {
		return fmt.Errorf("%s: row %d: %w", rd.name, row, err)
	}
	return nil
}

// streamError turns an error from the byte stream into the error Read
// returns, or nil when it did not come from the stream.
func (rd *reader) streamError(err error, row int) error {
	var se *sourceError
	var ce *corruptError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("reading %s: %w", rd.name, se.err)
	case errors.As(err, &ce):
		return &FileError{File: rd.name, Problem: "compressed data is truncated or corrupt",
			Hint: "upload the file again (gzip -t checks a file)"}
	case errors.Is(err, errRecordTooLarge):
		return &FileError{File: rd.name, Row: row, Problem: "row is larger than 16 MiB",
			Hint: "check that the file really is CSV, JSON Lines or a JSON array"}
	}
	return nil
}

// skipPrefix skips a UTF-8 byte order mark and leading white space and
// returns the first other byte (left unread) and how many line breaks were
// skipped. The line holding that byte is kept whole, so a CSV header keeps
// its leading blanks (a tab there may separate an empty first column).
func skipPrefix(br *bufio.Reader) (byte, int, error) {
	if b, err := br.Peek(3); bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) {
		if _, err := br.Discard(3); err != nil {
			return 0, 0, err
		}
	} else if err != nil && err != io.EOF {
		return 0, 0, err
	}
	lines := 0
	for {
		buf, err := br.Peek(bufSize)
		if err != nil && err != io.EOF {
			// bufio hands a read error out once: report it now.
			return 0, 0, err
		}
		if i := bytes.IndexFunc(buf, func(r rune) bool { return !isJSONSpace(r) }); i >= 0 {
			first := buf[i]
			skip := i
			if first != '[' && first != '{' {
				skip = bytes.LastIndexByte(buf[:i], '\n') + 1
			}
			lines += bytes.Count(buf[:skip], []byte{'\n'})
			_, derr := br.Discard(skip)
			return first, lines, derr
		}
		lines += bytes.Count(buf, []byte{'\n'})
		if _, derr := br.Discard(len(buf)); derr != nil {
			return 0, 0, derr
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

func isJSONSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' }

// sourceReader marks errors from the caller's reader so they are reported
// as read failures, not as a corrupt file.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// gzipReader marks decompression errors as a corrupt file.
type gzipReader struct{ r io.Reader }

func (g gzipReader) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	return n, gzipError(err)
}

func gzipError(err error) error {
	var se *sourceError
	if err == nil || err == io.EOF || errors.As(err, &se) {
		return err
	}
	return &corruptError{err}
}

type corruptError struct{ err error }

func (e *corruptError) Error() string { return "corrupt compressed data: " + e.err.Error() }
func (e *corruptError) Unwrap() error { return e.err }

var errRecordTooLarge = errors.New("record too large")

// boundedReader fails once more than maxRecordLen bytes were read since the
// last mark, so a file with no row breaks cannot exhaust memory.
type boundedReader struct {
	r       io.Reader
	n, last int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	left := maxRecordLen - (b.n - b.last)
	if left < 0 {
		return 0, errRecordTooLarge
	}
	if int64(len(p)) > left+1 {
		// A reader holding the whole file (a bytes.Reader, a big read of
		// an os.File) would otherwise hand a row of any size over at once.
		p = p[:left+1]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

// mark records that a row ended.
func (b *boundedReader) mark() { b.last = b.n }
