package segment

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding"
	"github.com/parquet-go/parquet-go/format"
)

// Parquet keeps its metadata in a footer at the end of the file, so it is
// read with random access, never as a stream. Read takes an io.Reader and
// does not know in advance what the file is, so it chooses once it has
// seen the magic bytes:
//
//   - a reader that is an io.ReaderAt and io.Seeker at offset 0 (an
//     *os.File of the folder store, a bytes.Reader, the io.SectionReader
//     ReadAt builds) is read in place, nothing copied;
//   - any other stream (an S3 GET's body, a gzipped Parquet file) is first
//     copied to a temporary file in Options.TempDir, removed at once where
//     the system allows so a killed process leaves nothing behind: disk
//     instead of memory, one sequential GET instead of ranged ones, and a
//     file that cannot change under the reader between two ranges (a new
//     upload under the same key would otherwise mix two files).
//
// Either way the file is read one row group at a time and, in it, one page
// per mapped column at a time: memory is bounded by the writer's page and
// dictionary sizes and the columns mapped, not by the file. Columns that no
// mapping names are never read. Values become the text a CSV cell would
// hold (csvText), then go through the very checks and conversions of CSV
// and JSON (buildProfile): one set of rules for every format.

const (
	// parquetBatchRows is how many rows are converted at a time.
	parquetBatchRows = 1024
	// parquetReadBuffer is each mapped column's read buffer.
	parquetReadBuffer = 256 << 10
	// spoolChunk is the size of each copy while spooling a stream to disk.
	spoolChunk = 256 << 10
)

// parquetMagic starts and ends every Parquet file; "PARE" starts one
// whose footer is encrypted.
var parquetMagic = []byte("PAR1")

// ReadAt is Read for a file held by r, size bytes long, that can be read
// at any offset: a Parquet file is then read in place, without a copy to
// disk. Other formats are streamed as Read streams them.
func ReadAt(ctx context.Context, r io.ReaderAt, size int64, opts Options, emit func(Record) error, reject func(Rejection) error) (Stats, error) {
	return Read(ctx, io.NewSectionReader(r, 0, size), opts, emit, reject)
}

// randomAccess returns r as an io.ReaderAt and its size when r can be read
// at any offset and has not been read yet.
func randomAccess(r io.Reader) (io.ReaderAt, int64, bool) {
	ra, ok := r.(io.ReaderAt)
	s, ok2 := r.(io.Seeker)
	if !ok || !ok2 {
		return nil, 0, false
	}
	if pos, err := s.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return nil, 0, false // a pipe, or a reader the caller started
	}
	size, err := s.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, 0, false
	}
	if _, err := s.Seek(0, io.SeekStart); err != nil {
		return nil, 0, false
	}
	return ra, size, true
}

// readParquetFrom reads the Parquet file whose stream br starts: in place
// when Read's reader allows it, else from a copy on disk.
func (rd *reader) readParquetFrom(br *bufio.Reader) error {
	rd.st.Format = "parquet"
	if rd.ra != nil && !rd.st.Compressed {
		return rd.readParquet(rd.ra, rd.size)
	}
	f, size, err := rd.spool(br)
	if err != nil {
		return err
	}
	defer f.close()
	return rd.readParquet(f.f, size)
}

// spooled is a temporary copy of a stream.
type spooled struct {
	f       *os.File
	removed bool
}

func (s *spooled) close() {
	s.f.Close() // read-only by now: nothing is lost if closing fails
	if !s.removed {
		os.Remove(s.f.Name())
	}
}

// spool copies the rest of br to a temporary file.
func (rd *reader) spool(br *bufio.Reader) (*spooled, int64, error) {
	f, err := os.CreateTemp(rd.tempDir, "segpilot-parquet-*")
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: copying it to disk to read it as Parquet: %w", rd.name, err)
	}
	// Unlinked at once: its space is freed when it is closed or when the
	// process ends, killed or not. Where an open file cannot be unlinked
	// (Windows), close removes it.
	s := &spooled{f: f, removed: os.Remove(f.Name()) == nil}
	buf := make([]byte, spoolChunk)
	var size int64
	for {
		if err := rd.ctx.Err(); err != nil {
			s.close()
			return nil, 0, fmt.Errorf("reading %s: %w", rd.name, err)
		}
		rd.bounded.mark() // a Parquet file has no rows for the bound to be about
		n, rerr := br.Read(buf)
		if _, err := f.Write(buf[:n]); err != nil {
			s.close()
			return nil, 0, fmt.Errorf("reading %s: copying it to disk to read it as Parquet: %w", rd.name, err)
		}
		size += int64(n)
		if rerr == io.EOF {
			return s, size, nil
		}
		if rerr != nil {
			s.close()
			if e := rd.streamError(rerr, 0); e != nil {
				return nil, 0, e
			}
			return nil, 0, fmt.Errorf("reading %s: %w", rd.name, rerr)
		}
	}
}

// parquetColumn is one mapped column being read.
type parquetColumn struct {
	leaf   int                                      // the leaf column's index in a row group
	maxDef byte                                     // the definition level of a value that is there
	conv   func(dst []byte, v parquet.Value) []byte // nil: the value's bytes as they are
	pages  parquet.Pages

	// The page being read. Most pages are read whole at once: a
	// dictionary-encoded page as indexes into the dictionary's values,
	// each made text once a row group; a page of strings as one string of
	// its values, each value a slice of it. Other pages (numbers, dates
	// without a dictionary) are read value by value and converted.
	page  parquet.Page
	nvals int    // values (rows) in the page, nulls included
	pos   int    // the next of them
	defs  []byte // the page's definition levels; nil: no nulls
	vi    int    // the next non-null value
	idx   []int32
	text  string
	offs  []uint32
	vals  parquet.ValueReader // set: the page is read value by value

	field    *field // the mapped field it feeds
	email    bool   // the email's column: its values are cleaned row by row (see cell.memo)
	dict     parquet.Dictionary
	dictText []string
	// dictMemo[i] is what buildProfile works out from dictText[i], when
	// that is cleaned already; nil when not. Made anew for each
	// dictionary: batches of the last row group may still point into it.
	dictMemo []*textMemo

	// For the values converted one by one in the batch being filled: the
	// rows they are for, where each one's text ends in converted.
	buf       []parquet.Value
	converted []byte
	rows      []int
	ends      []int
}

func (rd *reader) readParquet(r io.ReaderAt, size int64) error {
	if size < 12 {
		return rd.damaged(fmt.Sprintf("%d bytes, too short for Parquet's header and footer", size))
	}
	src := sourceReaderAt{r}
	if err := checkFooter(src, size); err != nil {
		return rd.parquetError(err)
	}
	f, err := openParquet(src, size)
	if err != nil {
		return rd.parquetError(err)
	}
	cols, err := rd.parquetColumns(f)
	if err != nil {
		return err
	}

	// As with CSV (csvblock.go): this goroutine reads and converts batches
	// of rows, workers check them, and Read's goroutine hands the outcomes
	// on in order.
	workers := max(1, runtime.GOMAXPROCS(0))
	inFlight := workers + 2
	free := make(chan *parquetBatch, inFlight+2)
	stop := make(chan struct{})
	ordered := make(chan *parquetBatch, inFlight)
	work := make(chan *parquetBatch, inFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Add(1 + workers)
	go func() {
		defer wg.Done()
		defer close(work)
		defer close(ordered)
		rd.readBatches(src, f, cols, free, func(b *parquetBatch) bool {
			select {
			case ordered <- b:
			case <-stop:
				return false
			}
			select {
			case work <- b:
				return true
			case <-stop:
				return false
			}
		})
	}()
	for range workers {
		go func() {
			defer wg.Done()
			for b := range work {
				select {
				case <-stop:
				default:
					b.check(rd.fields)
				}
				close(b.done)
			}
		}()
	}
	for b := range ordered {
		<-b.done
		if err := rd.deliverRows(b.rows); err != nil {
			return err
		}
		clear(b.rows) // the profiles now belong to the caller
		if b.err != nil {
			return b.err
		}
		select {
		case free <- b:
		default:
		}
	}
	return nil
}

// parquetBatch is up to parquetBatchRows rows of a row group, and what a
// worker made of them; or, with err, the end of the read.
type parquetBatch struct {
	n     int
	cells []cell // n rows of len(fields) cells
	rows  []csvRow
	err   error
	done  chan struct{}
}

// check validates the batch's rows into b.rows.
func (b *parquetBatch) check(fields []field) {
	nf := len(fields)
	for k := range b.n {
		cells := b.cells[k*nf : (k+1)*nf]
		p, why := buildProfile(fields, cells)
		if why != "" {
			b.rows = append(b.rows, csvRow{email: reportEmail(cells[0]), reason: why})
			continue
		}
		b.rows = append(b.rows, csvRow{p: p})
	}
}

// readBatches reads the file's row groups in order, batch after batch,
// handing each to send until it returns false; a problem ends the read
// with a batch holding it.
func (rd *reader) readBatches(src io.ReaderAt, f *parquet.File, cols []parquetColumn, free chan *parquetBatch, send func(*parquetBatch) bool) {
	checker := newPageChecker()
	defer checker.close()
	newBatch := func() *parquetBatch {
		var b *parquetBatch
		select {
		case b = <-free:
			*b = parquetBatch{cells: b.cells, rows: b.rows[:0]}
		default:
			b = &parquetBatch{cells: make([]cell, parquetBatchRows*len(cols)), rows: make([]csvRow, 0, parquetBatchRows)}
		}
		b.done = make(chan struct{})
		return b
	}
	fail := func(err error) {
		b := newBatch()
		b.err = err
		send(b)
	}
	for g, rg := range f.RowGroups() {
		if err := rd.openRowGroup(src, f, g, rg, cols, checker); err != nil {
			fail(err)
			return
		}
		for left := rg.NumRows(); left > 0; {
			n := int(min(left, parquetBatchRows))
			b := newBatch()
			if err := rd.fillBatch(g, cols, b, n); err != nil {
				closeColumns(cols)
				fail(err)
				return
			}
			if !send(b) {
				closeColumns(cols)
				return
			}
			left -= int64(n)
		}
		closeColumns(cols)
	}
}

// openRowGroup opens the mapped columns' pages of row group g, once their
// page headers are seen to be safe for the library to read.
func (rd *reader) openRowGroup(src io.ReaderAt, f *parquet.File, g int, rg parquet.RowGroup, cols []parquetColumn, checker *pageChecker) error {
	chunks := rg.ColumnChunks()
	meta := f.Metadata().RowGroups
	for i := range cols {
		c := &cols[i]
		if c.leaf >= len(chunks) || g >= len(meta) || c.leaf >= len(meta[g].Columns) {
			closeColumns(cols)
			return rd.damaged(fmt.Sprintf("row group %d has %d columns, the schema more", g+1, len(chunks)))
		}
		m := meta[g].Columns[c.leaf].MetaData
		start := m.DataPageOffset
		if m.DictionaryPageOffset != 0 { // where the library starts too
			start = m.DictionaryPageOffset
		}
		if err := checker.check(src, f.Size(), start, m.TotalCompressedSize, m.Codec); err != nil {
			closeColumns(cols)
			return rd.parquetError(err)
		}
		pages, err := openPages(chunks[c.leaf])
		if err != nil {
			closeColumns(cols)
			return rd.parquetError(err)
		}
		c.pages = pages
	}
	return nil
}

func closeColumns(cols []parquetColumn) {
	for i := range cols {
		cols[i].close()
	}
}

// fillBatch reads the next n values of each mapped column of row group g
// into b's cells.
func (rd *reader) fillBatch(g int, cols []parquetColumn, b *parquetBatch, n int) error {
	for i := range cols {
		if err := cols[i].fill(b.cells, len(cols), i, n); err != nil {
			if errors.Is(err, errShortColumn) {
				return rd.damaged(fmt.Sprintf("column %q has fewer values than row group %d has rows", rd.fields[i].name, g+1))
			}
			return rd.parquetError(err)
		}
	}
	b.n = n
	return nil
}

var errShortColumn = errors.New("column has fewer values than rows")

// fill sets cell col of the next n rows of cells (nf cells a row) to the
// text of the column's next n values.
func (c *parquetColumn) fill(cells []cell, nf, col, n int) (err error) {
	defer recoverParquet(&err)
	c.converted, c.rows, c.ends = c.converted[:0], c.rows[:0], c.ends[:0]
	for k := 0; k < n; {
		if c.page == nil {
			if err := c.nextPage(); err != nil {
				return err
			}
		}
		got, err := c.take(cells, nf, col, k, n-k)
		if err != nil {
			return err
		}
		k += got
	}
	if len(c.rows) > 0 {
		s := string(c.converted) // one string for the batch's converted values
		start := 0
		for j, k := range c.rows {
			cells[k*nf+col] = cell{s: s[start:c.ends[j]], present: true}
			start = c.ends[j]
		}
	}
	return nil
}

// nextPage reads the column's next page and chooses how to read it.
func (c *parquetColumn) nextPage() error {
	page, err := c.pages.ReadPage()
	if err == io.EOF {
		return errShortColumn
	}
	if err != nil {
		return err
	}
	c.page, c.pos, c.vi = page, 0, 0
	c.nvals, c.defs = int(page.NumValues()), page.DefinitionLevels()
	if c.defs != nil && len(c.defs) != c.nvals {
		return fmt.Errorf("a page has %d values and %d definition levels", c.nvals, len(c.defs))
	}
	data := page.Data()
	switch d := page.Dictionary(); {
	case d != nil:
		if d != c.dict {
			c.dict = d
			c.dictionaryText(d)
		}
		c.idx = data.Int32()
	case c.conv == nil && data.Kind() == encoding.ByteArray:
		b, offs := data.ByteArray()
		// One copy of the page's values: a string the rows' values share.
		c.text, c.offs = string(b), offs
	default:
		c.vals = page.Values()
	}
	return nil
}

// dictionaryText makes each of d's values text, once for the row group,
// and cleans it as buildProfile would, once for every row that holds it:
// a column of few distinct names is cleaned a few times, not a million.
func (c *parquetColumn) dictionaryText(d parquet.Dictionary) {
	c.dictText = c.dictText[:0]
	c.dictMemo = make([]*textMemo, 0, d.Len())
	memos := make([]textMemo, d.Len())
	var b []byte
	for i := range d.Len() {
		v := d.Index(int32(i))
		b = b[:0]
		if c.conv == nil {
			b = append(b, v.ByteArray()...)
		} else {
			b = c.conv(b, v)
		}
		s := string(b)
		var memo *textMemo
		if len(s) <= maxFieldLen && !c.email { // a longer value is refused for its raw length
			if cleaned, _, ok := cleanTextASCII(s); ok {
				memos[i] = memoFor(c.field, cleaned)
				s, memo = cleaned, &memos[i]
			}
		}
		c.dictText, c.dictMemo = append(c.dictText, s), append(c.dictMemo, memo)
	}
}

// take sets cell col of up to m rows of cells from row k on, from the
// current page, and returns how many it set.
func (c *parquetColumn) take(cells []cell, nf, col, k, m int) (int, error) {
	if c.vals != nil {
		return c.takeValues(cells, nf, col, k, m)
	}
	m = min(m, c.nvals-c.pos)
	for j := range m {
		at := (k+j)*nf + col
		if c.defs != nil && c.defs[c.pos+j] != c.maxDef {
			cells[at] = cell{}
			continue
		}
		v := c.vi
		c.vi++
		switch {
		case c.idx != nil:
			i := c.idx[v]
			if i < 0 || int(i) >= len(c.dictText) {
				return 0, fmt.Errorf("dictionary index %d out of range (%d values)", i, len(c.dictText))
			}
			cells[at] = cell{s: c.dictText[i], present: true, memo: c.dictMemo[i]}
		default:
			if v+1 >= len(c.offs) || c.offs[v] > c.offs[v+1] || int(c.offs[v+1]) > len(c.text) {
				return 0, errors.New("a page has fewer values than it says")
			}
			cells[at] = cell{s: c.text[c.offs[v]:c.offs[v+1]], present: true}
		}
	}
	c.pos += m
	if c.pos == c.nvals {
		c.release()
	}
	return m, nil
}

// takeValues is take for a page read value by value.
func (c *parquetColumn) takeValues(cells []cell, nf, col, k, m int) (int, error) {
	got, err := c.vals.ReadValues(c.buf[:m])
	if got == 0 && err == nil {
		return 0, errors.New("a page gave no values")
	}
	for j := range got {
		v := &c.buf[j]
		if v.IsNull() {
			cells[(k+j)*nf+col] = cell{}
			continue
		}
		// Byte arrays point into the page: converted before it is released.
		if c.conv == nil {
			c.converted = append(c.converted, v.ByteArray()...)
		} else {
			c.converted = c.conv(c.converted, *v)
		}
		c.rows, c.ends = append(c.rows, k+j), append(c.ends, len(c.converted))
	}
	switch {
	case err == io.EOF:
		c.release()
	case err != nil:
		return 0, err
	}
	return got, nil
}

func (c *parquetColumn) release() {
	parquet.Release(c.page)
	c.page, c.vals, c.idx, c.defs, c.offs, c.text = nil, nil, nil, nil, nil, ""
}

func (c *parquetColumn) close() {
	if c.page != nil {
		c.release()
	}
	c.dict = nil // a row group's dictionary is its own
	if c.pages != nil {
		c.pages.Close() // releases buffers; reading is over
		c.pages = nil
	}
}

// parquetColumns matches the mapping against the file's top-level columns,
// by name as a CSV header is matched, and checks that each can be read.
func (rd *reader) parquetColumns(f *parquet.File) (_ []parquetColumn, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = rd.damaged(fmt.Sprint(p))
		}
	}()
	top := f.Root().Columns()
	names := make([]string, len(top))
	for i, c := range top {
		names[i] = c.Name()
	}
	for i := range rd.fields {
		fl := &rd.fields[i]
		if col, _ := matchColumn(names, fl.source); col < 0 {
			if parent, kind := nestedParent(top, fl.source); parent != "" {
				return nil, &FileError{File: rd.name, Column: fl.source,
					Problem: fmt.Sprintf("column is inside %s %q (%s); segpilot maps top-level columns only", kind, parent, fl.setting),
					Hint:    "export the value as a column of its own (e.g. SELECT " + shorten(fl.source) + " AS …), and map that"}
			}
		}
	}
	if err := rd.matchHeader(names, "the file's columns are"); err != nil {
		return nil, err
	}
	cols := make([]parquetColumn, len(rd.fields))
	for i := range rd.fields {
		fl := &rd.fields[i]
		col := top[fl.col]
		if !col.Leaf() || col.Repeated() {
			return nil, &FileError{File: rd.name, Column: fl.name,
				Problem: fmt.Sprintf("column is %s, not one value a row (%s)", nestedKind(col), fl.setting),
				Hint:    "export the value wanted as a column of its own (e.g. SELECT tags[1] AS tag), or map another column"}
		}
		conv, asBytes, unsupported := csvText(col.Type())
		if conv == nil && !asBytes {
			return nil, &FileError{File: rd.name, Column: fl.name,
				Problem: fmt.Sprintf("column is of Parquet type %s, which segpilot does not read (%s)", unsupported, fl.setting),
				Hint:    "cast it to a string or a number in the export, or map another column"}
		}
		cols[i] = parquetColumn{leaf: col.Index(), maxDef: byte(col.MaxDefinitionLevel()), conv: conv, field: fl, email: i == 0,
			buf: make([]parquet.Value, parquetBatchRows)}
	}
	return cols, nil
}

// nestedKind names what a column that is not one plain value is.
func nestedKind(col *parquet.Column) string {
	if lt := col.Type().LogicalType(); lt != nil {
		switch lt.Value.(type) {
		case *format.ListType:
			return "a LIST"
		case *format.MapType:
			return "a MAP"
		case *format.VariantType:
			return "a VARIANT"
		}
	}
	if col.Repeated() {
		return "a repeated column"
	}
	return "a group of columns (a struct)"
}

// nestedParent finds name among the dotted paths of the columns nested in
// top (address.city); it returns the top-level column holding it and what
// that column is.
func nestedParent(top []*parquet.Column, name string) (string, string) {
	want := strings.TrimSpace(name)
	for _, c := range top {
		if c.Leaf() {
			continue
		}
		var found bool
		var walk func(*parquet.Column)
		walk = func(n *parquet.Column) {
			for _, ch := range n.Columns() {
				if strings.EqualFold(strings.Join(ch.Path(), "."), want) {
					found = true
				}
				walk(ch)
			}
		}
		walk(c)
		if found {
			return c.Name(), nestedKind(c)
		}
	}
	return "", ""
}

// parquetError turns an error of the Parquet library into Read's error: a
// failure of the caller's reader as it is, anything else a damaged file.
func (rd *reader) parquetError(err error) error {
	var se *sourceError
	if errors.As(err, &se) {
		return fmt.Errorf("reading %s: %w", rd.name, se.err)
	}
	return rd.damaged(err.Error())
}

func (rd *reader) damaged(why string) *FileError {
	if len(why) > 200 {
		why = shorten(why[:200])
	}
	return &FileError{File: rd.name, Problem: "not a readable Parquet file (" + why + ")",
		Hint: "export it again: a file cut short or damaged on the way reads like this"}
}

// sourceReaderAt marks errors from the caller's reader, as sourceReader does.
type sourceReaderAt struct{ r io.ReaderAt }

func (s sourceReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		// An offset read from a damaged file: the file's fault.
		return 0, fmt.Errorf("offset %d is before the file's start", off)
	}
	n, err := s.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

// The Parquet library panics on some damaged files (a schema it cannot
// make sense of, a type asked for what it lacks, levels out of range);
// openParquet, openPages, parquetColumns and fill turn such a panic into
// an error, so a damaged upload is an invalid file, not a crash. They call
// nothing of the caller's: a panic in emit or reject is the caller's.

func openParquet(r io.ReaderAt, size int64) (f *parquet.File, err error) {
	defer recoverParquet(&err)
	return parquet.OpenFile(r, size,
		parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true),
		parquet.ReadBufferSize(parquetReadBuffer))
}

func openPages(c parquet.ColumnChunk) (p parquet.Pages, err error) {
	defer recoverParquet(&err)
	return c.Pages(), nil
}

func recoverParquet(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("%v", p)
	}
}
