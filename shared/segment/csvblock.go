package segment

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// CSV is read in parallel: a splitter cuts the stream into blocks of whole
// records, workers parse and validate blocks, and Read's goroutine hands the
// results on in block order, so callbacks, rows and stats are as if one
// reader went through the file. Workers split lines without a double quote
// themselves (such a line is one whole record and cannot be malformed) and
// give any record with a quote to encoding/csv, so quoting rules and error
// messages (lines counted across blocks) stay that package's. An oracle test
// compares the result with one encoding/csv reader over the whole stream.

// csvBlockSize is roughly how many bytes of records a block holds.
const csvBlockSize = 64 << 10

// csvBlock is a run of whole records cut from the stream, and what a worker
// made of it.
type csvBlock struct {
	data  []byte
	line  int   // line breaks before data, counted from the header's first line
	final bool  // the stream ends with data
	err   error // the stream failed right after data (then no block follows)

	rows      []csvRow
	perr      error // the parse stopped here, after rows
	perrLine  int   // line breaks before the record perr is about
	perrAtEnd bool  // perr came up with all of data read
	done      chan struct{}
}

// empty reports whether b is the end of the stream and nothing more.
func (b *csvBlock) empty() bool { return b.final && len(b.data) == 0 }

// csvRow is one data row's outcome.
type csvRow struct {
	p      Profile
	email  string // rejected: the email as given
	reason string // non-empty: rejected
	ragged bool   // rejected for its field count, before any cell was looked at
}

// csvSplitter cuts the stream at record ends: line breaks outside quoted
// fields, quotes read as Excel reads them (csvquote.go). Text after a
// closing quote is a parse error that the worker holding it reports before
// anything cut after it is used.
type csvSplitter struct {
	r         io.Reader
	bounded   *boundedReader
	delim     byte
	buf       []byte
	scanned   int        // buf[:scanned] has been scanned
	state     quoteState // at scanned
	first     int        // end of the first record in buf; 0: none yet
	last      int        // end of the last whole record in buf; 0: none yet
	line      int        // line breaks before buf[0]
	blockSize int
	spare     *csvBlock // owns buf; handed out with it
	free      chan *csvBlock
}

// next returns the next block: only the first record when header is set,
// else about blockSize bytes of records. Only the last block is final, but
// it may be empty: the block before it did not know it was the last.
func (s *csvSplitter) next(header bool) *csvBlock {
	for {
		end := s.last
		if header {
			end = s.first
		}
		if end > 0 && (header || len(s.buf) >= s.blockSize) {
			return s.cut(end)
		}
		if len(s.buf)-end > maxRecordLen {
			return s.rest(errRecordTooLarge)
		}
		// Read up to about a block; more only while one record is longer.
		limit := max(s.blockSize, len(s.buf)+min(bufSize, s.blockSize))
		if limit > cap(s.buf) {
			s.buf = slices.Grow(s.buf, max(limit, 2*cap(s.buf))-len(s.buf))
		}
		s.bounded.mark() // the splitter bounds records itself
		n, err := s.r.Read(s.buf[len(s.buf):limit])
		s.buf = s.buf[:len(s.buf)+n]
		s.scan()
		if err == io.EOF {
			return s.rest(nil)
		}
		if err != nil {
			return s.rest(err)
		}
	}
}

// scan finds the record ends in the bytes read since the last scan. Text
// outside quoted fields is searched for line feeds a stretch at a time, up
// to the next quote that opens a field.
func (s *csvSplitter) scan() {
	b := s.buf
	i := s.scanned
	for i < len(b) {
		switch s.state {
		case qQuoted:
			q := bytes.IndexByte(b[i:], '"')
			if q < 0 {
				i = len(b)
				continue
			}
			i += q + 1
			s.state = qQuote
			continue
		case qQuote:
			if b[i] == '"' {
				i++
				s.state = qQuoted
				continue
			}
			s.state = qText // b[i] is read below, as text
		}
		end, opens := len(b), false
		for j := i; ; {
			q := bytes.IndexByte(b[j:], '"')
			if q < 0 {
				break
			}
			q += j
			if q == i && s.state == qField || q > i && (b[q-1] == s.delim || b[q-1] == '\n') {
				end, opens = q, true
				break
			}
			j = q + 1
		}
		seg := b[i:end]
		if s.first == 0 {
			if k := bytes.IndexByte(seg, '\n'); k >= 0 {
				s.first = i + k + 1
			}
		}
		if k := bytes.LastIndexByte(seg, '\n'); k >= 0 {
			s.last = i + k + 1
		}
		if opens {
			i, s.state = end+1, qQuoted
			continue
		}
		if n := len(seg); n > 0 {
			s.state = qText
			if c := seg[n-1]; c == s.delim || c == '\n' {
				s.state = qField
			}
		}
		i = len(b)
	}
	s.scanned = i
}

// newBlock returns an empty block, recycled when one is free, with a data
// buffer of at least n bytes.
func (s *csvSplitter) newBlock(n int) *csvBlock {
	var b *csvBlock
	select {
	case b = <-s.free:
		*b = csvBlock{data: b.data[:0], rows: b.rows[:0]}
	default:
		b = &csvBlock{}
	}
	if cap(b.data) < n || b.data == nil {
		b.data = make([]byte, 0, max(n, s.blockSize+bufSize))
	}
	b.done = make(chan struct{})
	return b
}

// cut hands out buf[:n] as a block and keeps the rest for the next one.
func (s *csvSplitter) cut(n int) *csvBlock {
	next := s.newBlock(len(s.buf) - n)
	next.data = append(next.data, s.buf[n:]...)
	b := s.spare
	b.data, b.line = s.buf[:n], s.line
	s.line += bytes.Count(b.data, []byte{'\n'})
	s.buf, s.spare = next.data, next
	s.scanned -= n
	s.first = 0
	s.last = max(s.last-n, 0)
	return b
}

// rest hands out everything left: the final block, or the data before a
// stream error.
func (s *csvSplitter) rest(err error) *csvBlock {
	b := s.spare
	b.data, b.line, b.final, b.err = s.buf, s.line, err == nil, err
	s.buf, s.spare = nil, nil
	return b
}

// csvWorker parses blocks with its own scratch space.
type csvWorker struct {
	rd    *reader
	delim rune
	width int // header fields
	src   bytes.Reader
	br    *bufio.Reader
	cells []cell
	rec   []string
}

func newCSVWorker(rd *reader, delim rune) *csvWorker {
	return &csvWorker{rd: rd, delim: delim, br: bufio.NewReaderSize(nil, bufSize), cells: make([]cell, len(rd.fields))}
}

// open returns a csv.Reader over the block that sees the stream error, if
// any, where the whole-file reader would have seen it.
func (w *csvWorker) open(b *csvBlock) *csv.Reader {
	w.src.Reset(b.data)
	var in io.Reader = &w.src
	if b.err != nil {
		in = io.MultiReader(in, failingReader{b.err})
	}
	w.br.Reset(in)
	cr := csv.NewReader(w.br)
	cr.Comma = w.delim
	cr.FieldsPerRecord = -1 // ragged rows are rejected rows, not file errors
	cr.ReuseRecord = true
	return cr
}

// parse reads the block's records from data[start:] (line breaks before
// start: startLine) into b.rows. Lines without a double quote, nearly all
// of them, are split here; a record with a quote goes to encoding/csv, so
// every quoting rule and error message stays that package's.
func (w *csvWorker) parse(b *csvBlock, start, startLine int) {
	// One string for the whole block: the profiles' strings share it.
	s := string(b.data[start:])
	line := startLine
	for pos := 0; pos < len(s); {
		nl := strings.IndexByte(s[pos:], '\n')
		end := len(s)
		if nl >= 0 {
			end = pos + nl + 1
		}
		if strings.IndexByte(s[pos:end], '"') >= 0 {
			end = recordEnd(b.data[start:], pos, byte(w.delim))
			if !w.parseQuoted(b, start+pos, start+end, line) {
				return
			}
			line += strings.Count(s[pos:end], "\n")
			pos = end
			continue
		}
		content := s[pos:end]
		pos = end
		if nl < 0 {
			if b.err != nil {
				break // a partial record before a stream error
			}
			// encoding/csv drops a carriage return before the end of file
			content = strings.TrimSuffix(content, "\r")
		} else {
			line++
			content = content[:len(content)-1]
			if n := len(content); n > 0 && content[n-1] == '\r' {
				content = content[:n-1]
			}
		}
		if content == "" {
			continue // encoding/csv skips empty lines
		}
		w.rec = w.rec[:0]
		for {
			i := strings.IndexByte(content, byte(w.delim))
			if i < 0 {
				break
			}
			w.rec = append(w.rec, content[:i])
			content = content[i+1:]
		}
		w.rec = append(w.rec, content)
		w.record(b, w.rec)
	}
	if b.err != nil {
		b.perr, b.perrLine = b.err, line
	}
}

// parseQuoted parses the one record in b.data[from:to] with encoding/csv,
// quotes read as Excel reads them; false when it failed and the block ends
// there.
func (w *csvWorker) parseQuoted(b *csvBlock, from, to, line int) bool {
	sub := &csvBlock{data: b.data[from:to]}
	if to == len(b.data) {
		sub.err = b.err // the stream error follows this record
	}
	var fixes []quoteFix
	if out, f := excelRecord(sub.data, byte(w.delim)); out != nil {
		sub.data, fixes = out, f
	}
	cr := w.open(sub)
	rec, err := cr.Read()
	if err == io.EOF {
		return true
	}
	if err != nil {
		b.perr, b.perrLine = fixColumn(err, fixes), line
		b.perrAtEnd = to == len(b.data) && atEOF(w.br) && unterminated(b.data[from:to], byte(w.delim))
		return false
	}
	w.record(b, rec)
	return true
}

// record validates one data row's cells and adds its outcome to b.rows.
func (w *csvWorker) record(b *csvBlock, rec []string) {
	fields := w.rd.fields
	if len(rec) != w.width {
		email := ""
		if c := fields[0].col; c < len(rec) {
			email = reportEmail(cell{s: rec[c], present: true})
		}
		b.rows = append(b.rows, csvRow{ragged: true, email: email,
			reason: fmt.Sprintf("row has %d fields, header has %d", len(rec), w.width)})
		return
	}
	cells := w.cells
	for i := range fields {
		cells[i] = cell{s: rec[fields[i].col], present: true}
	}
	p, why := buildProfile(fields, cells)
	if why != "" {
		b.rows = append(b.rows, csvRow{email: reportEmail(cells[0]), reason: why})
		return
	}
	b.rows = append(b.rows, csvRow{p: p})
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func (rd *reader) readCSV(br *bufio.Reader, prefixLines int) error {
	delim, err := detectDelimiter(br, rd.fields[0].source)
	if err != nil {
		return rd.streamError(err, 0)
	}
	rd.st.Delimiter = string(delim)

	workers := max(1, runtime.GOMAXPROCS(0))
	inFlight := workers + 2
	sp := &csvSplitter{r: br, bounded: rd.bounded, delim: byte(delim), blockSize: rd.blockSize, free: make(chan *csvBlock, inFlight+2)}
	sp.spare = sp.newBlock(0)
	sp.buf = sp.spare.data
	w := newCSVWorker(rd, delim)

	// The header is parsed here: workers need its columns.
	hb := sp.next(true)
	hdr, fixes, inserted := hb, []quoteFix(nil), 0
	if out, f := excelRecord(hb.data, byte(delim)); out != nil {
		hdr, fixes, inserted = &csvBlock{data: out, err: hb.err}, f, len(out)-len(hb.data)
	}
	cr := w.open(hdr)
	header, err := cr.Read()
	if err != nil {
		eof := atEOF(w.br) && (hb.final || sp.next(false).empty()) && unterminated(hb.data, byte(delim))
		return rd.csvError(fixColumn(err, fixes), 0, prefixLines+hb.line, eof)
	}
	header = append([]string(nil), header...) // ReuseRecord recycles the slice
	if err := rd.matchHeader(header, "the header has"); err != nil {
		return err
	}
	w.width = len(header)
	rest := int(cr.InputOffset()) - inserted // the header is all of hb's records
	w.parse(hb, rest, hb.line+bytes.Count(hb.data[:rest], []byte{'\n'}))
	if err := rd.deliverCSV(hb, prefixLines, func() bool { return sp.next(false).empty() }); err != nil || hb.final || hb.err != nil || hb.perr != nil {
		return err
	}

	stop := make(chan struct{})
	ordered := make(chan *csvBlock, inFlight)
	work := make(chan *csvBlock, inFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Add(1 + workers)
	go func() {
		defer wg.Done()
		defer close(work)
		defer close(ordered)
		for {
			b := sp.next(false)
			select {
			case ordered <- b:
			case <-stop:
				return
			}
			select {
			case work <- b:
			case <-stop:
				return
			}
			if b.final || b.err != nil {
				return
			}
		}
	}()
	for range workers {
		go func() {
			defer wg.Done()
			w := newCSVWorker(rd, delim)
			w.width = len(header)
			for b := range work {
				select {
				case <-stop:
				default:
					w.parse(b, 0, b.line)
				}
				close(b.done)
			}
		}()
	}
	// lastBlock tells whether the stream ends after the block delivered;
	// only a parse error's message needs to know.
	lastBlock := func() bool {
		b, ok := <-ordered
		if ok {
			<-b.done
		}
		return ok && b.empty()
	}
	for b := range ordered {
		<-b.done
		if err := rd.deliverCSV(b, prefixLines, lastBlock); err != nil {
			return err
		}
		select {
		case sp.free <- b:
		default:
		}
	}
	return nil
}

// deliverCSV hands a parsed block's rows on in order, then its parse error;
// lastBlock reports whether the stream ends after b (when not final).
func (rd *reader) deliverCSV(b *csvBlock, prefixLines int, lastBlock func() bool) error {
	if err := rd.deliverRows(b.rows); err != nil {
		return err
	}
	clear(b.rows) // the profiles now belong to the caller, and the block may be reused
	if b.perr != nil {
		eof := b.perrAtEnd && (b.final || (b.err == nil && lastBlock()))
		return rd.csvError(b.perr, rd.st.Rows+1, prefixLines+b.perrLine, eof)
	}
	return nil
}

// deliverRows hands rows' outcomes on in order, numbering them.
func (rd *reader) deliverRows(rows []csvRow) error {
	for i := range rows {
		r := &rows[i]
		rd.st.Rows++
		row := rd.st.Rows
		if !r.ragged && row%ctxEvery == 0 {
			if err := rd.ctx.Err(); err != nil {
				return fmt.Errorf("reading %s: %w", rd.name, err)
			}
		}
		if r.reason != "" {
			if err := rd.rejectRow(row, r.email, r.reason); err != nil {
				return err
			}
			continue
		}
		rd.st.Valid++
		if err := rd.emit(Record{Row: row, Profile: r.p}); err != nil {
			return fmt.Errorf("%s: row %d: %w", rd.name, row, err)
		}
	}
	return nil
}
