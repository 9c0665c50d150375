package segment

import (
	"bytes"
	"encoding/csv"
	"errors"
)

// Quotes are read as Excel reads them (and Google Sheets, and Python's csv
// module): a double quote opens a quoted field only as the field's first
// byte; anywhere else in an unquoted field it is text, so `5" screen` and
// `O"Neil` read as written instead of making the whole file invalid, which
// encoding/csv does (ErrBareQuote), and which rejecting the row would turn
// into a lost contact. A quoted field follows RFC 4180, and text after its
// closing quote is still an error: there the file's quoting is broken, and
// guessing where the field ends could shift every column after it.
//
// encoding/csv still reads every record: a record whose unquoted fields
// hold quotes is rewritten first with those fields quoted and their quotes
// doubled (excelRecord), which means the same text under RFC 4180.

// quoteState is where a scan of CSV stands, as Excel reads quotes.
type quoteState uint8

const (
	qField  quoteState = iota // at a field's first byte
	qText                     // in an unquoted field, or after a quoted field's closing quote
	qQuoted                   // in a quoted field
	qQuote                    // in a quoted field, just after a quote: its end, or the first of two
)

// step returns the state after byte c.
func (st quoteState) step(c, delim byte) quoteState {
	switch st {
	case qQuoted:
		if c == '"' {
			return qQuote
		}
		return qQuoted
	case qQuote:
		if c == '"' {
			return qQuoted // a doubled quote
		}
	case qField:
		if c == '"' {
			return qQuoted
		}
	}
	if c == delim || c == '\n' {
		return qField
	}
	return qText
}

// unterminated reports whether the record that b starts with fails for
// a quote never closed: it ends inside a quoted field, with no text after
// a closing quote before (encoding/csv reports that first). A carriage
// return after a closing quote is a line's end only before a line feed or
// at the end of b (encoding/csv drops one there); before anything else it
// is text, as encoding/csv reads it.
func unterminated(b []byte, delim byte) bool {
	st := qField
	for i, c := range b {
		crlf := c == '\r' && (i+1 == len(b) || b[i+1] == '\n')
		if st == qQuote && c != '"' && c != delim && c != '\n' && !crlf {
			return false
		}
		st = st.step(c, delim)
	}
	return st == qQuoted
}

// recordEnd returns the end of the record starting at b[pos]: after the
// first line feed outside quotes, or len(b).
func recordEnd(b []byte, pos int, delim byte) int {
	st := qField
	for i := pos; i < len(b); i++ {
		if b[i] == '\n' && st != qQuoted {
			return i + 1
		}
		st = st.step(b[i], delim)
	}
	return len(b)
}

// quoteFix is one unquoted field that excelRecord quoted: on its line of
// the record (from 1), at byte start of the rewritten line (from 1), ins
// bytes longer than it was.
type quoteFix struct{ line, start, ins int }

// excelRecord returns rec, one record, with every unquoted field holding a
// quote rewritten as a quoted field, and where it did so; nil when rec
// needs no rewriting. A carriage return ending a line stays outside the
// new quotes, as encoding/csv drops it there.
func excelRecord(rec []byte, delim byte) ([]byte, []quoteFix) {
	var out []byte
	var fixes []quoteFix
	done := 0 // rec[:done] is in out
	line, lineStart, shift := 1, 0, 0
	st := qField
	for i := 0; i < len(rec); i++ {
		c := rec[i]
		if st == qField && c != '"' && c != delim && c != '\n' {
			end := i
			for end < len(rec) && rec[end] != delim && rec[end] != '\n' {
				end++
			}
			field := rec[i:end]
			if end == len(rec) || rec[end] == '\n' {
				field = bytes.TrimSuffix(field, []byte{'\r'})
			}
			if n := bytes.Count(field, []byte{'"'}); n > 0 {
				if out == nil {
					out = make([]byte, 0, len(rec)+2+n)
				}
				out = append(out, rec[done:i]...)
				out = append(out, '"')
				out = append(out, bytes.ReplaceAll(field, []byte{'"'}, []byte(`""`))...)
				out = append(out, '"')
				done = i + len(field)
				fixes = append(fixes, quoteFix{line: line, start: i - lineStart + 1 + shift, ins: 2 + n})
				shift += 2 + n
			}
			i = end - 1
			st = qText
			continue
		}
		if st == qQuote && c != '"' && c != delim && c != '\n' {
			break // text after a closing quote: encoding/csv reports it
		}
		st = st.step(c, delim)
		if c == '\n' {
			line, lineStart, shift = line+1, i+1, 0
		}
	}
	if out == nil {
		return nil, nil
	}
	return append(out, rec[done:]...), fixes
}

// fixColumn turns the column of a parse error in a record excelRecord
// rewrote back into a column of the file's line.
func fixColumn(err error, fixes []quoteFix) error {
	var pe *csv.ParseError
	if len(fixes) == 0 || !errors.As(err, &pe) {
		return err
	}
	fixed := *pe
	for _, f := range fixes {
		if f.line == pe.Line && f.start < pe.Column {
			fixed.Column -= f.ins
		}
	}
	return &fixed
}

// readExcelRecord reads the one record in data with delimiter delim.
func readExcelRecord(data []byte, delim rune) ([]string, error) {
	fixes := []quoteFix(nil)
	if out, f := excelRecord(data, byte(delim)); out != nil {
		data, fixes = out, f
	}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comma = delim
	cr.FieldsPerRecord = -1
	rec, err := cr.Read()
	return rec, fixColumn(err, fixes)
}
