package segment

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// readJSON reads a JSON array of objects (array) or JSON Lines: a stream of
// objects, one per line. Both are decoded one value at a time.
func (rd *reader) readJSON(br *bufio.Reader, prefixLines int, array bool) error {
	// Where the rows are if the file is one object wrapping them, as far as
	// its start tells: for a wrapper too large to read as a row.
	headKey := ""
	if !array {
		head, err := br.Peek(bufSize)
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return rd.streamError(err, 0)
		}
		headKey = rowsKey(head)
	}
	lt := &lineTracker{r: br, lines: prefixLines}
	dec := json.NewDecoder(lt)
	if array {
		if _, err := dec.Token(); err != nil { // the '[' skipPrefix saw
			return rd.jsonError(err, 1, dec, lt)
		}
	}
	cells := make([]cell, len(rd.fields))
	obj := make(map[string]json.RawMessage, 8)
	var raw json.RawMessage // reused: Decode appends to it
	for {
		row := rd.st.Rows + 1
		if array && !dec.More() {
			break
		}
		err := dec.Decode(&raw)
		if !array && err == io.EOF {
			return nil
		}
		if err != nil {
			if row == 1 && headKey != "" && errors.Is(err, errRecordTooLarge) {
				return wrappedError(rd.name, headKey)
			}
			return rd.jsonError(err, row, dec, lt)
		}
		lt.mark(dec.InputOffset())
		rd.bounded.mark()
		if raw[0] != '{' {
			rd.st.Rows++
			if err := rd.rejectRow(row, "", "row is not a JSON object"); err != nil {
				return err
			}
			continue
		}
		clear(obj)
		dup, twice := objectFields(raw, obj)
		why := rd.objectCells(obj, cells)
		if row == 1 && !array && !cells[0].present {
			if err := rd.wrappedRows(raw, dec); err != nil {
				return err
			}
		}
		rd.st.Rows++
		if twice {
			email := reportEmail(cells[0])
			if strings.EqualFold(strings.TrimSpace(dup), strings.TrimSpace(rd.fields[0].source)) {
				email = "" // which of the two is the address is anyone's guess
			}
			if err := rd.rejectRow(row, email, fmt.Sprintf("key %q appears twice in the object; keep one", shorten(dup))); err != nil {
				return err
			}
			continue
		}
		if why != "" {
			if err := rd.rejectRow(row, reportEmail(cells[0]), why); err != nil {
				return err
			}
			continue
		}
		if err := rd.row(row, cells); err != nil {
			return err
		}
	}
	tok, err := dec.Token()
	if err != nil {
		return rd.jsonError(err, rd.st.Rows+1, dec, lt)
	}
	if tok != json.Delim(']') {
		return rd.syntaxError(rd.st.Rows+1, lt.lineAt(dec.InputOffset()), fmt.Sprintf("unexpected %v in the array", tok))
	}
	lt.mark(dec.InputOffset())
	if _, err := dec.Token(); err != io.EOF {
		if e := rd.streamError(err, 0); e != nil {
			return e
		}
		return rd.syntaxError(0, lt.lineAt(dec.InputOffset()), "unexpected data after the JSON array")
	}
	return nil
}

// objectFields puts the top-level members of raw, a valid JSON object, into
// obj: keys unescaped, values as slices of raw. The first key that appears
// twice is returned (and twice set; obj keeps its first value): encoding/json
// would keep the last value silently.
func objectFields(raw []byte, obj map[string]json.RawMessage) (dup string, twice bool) {
	i := 1 // after the '{'
	for {
		i = skipJSONSpace(raw, i)
		if raw[i] == '}' {
			return dup, twice
		}
		keyEnd := jsonValueEnd(raw, i)
		key := jsonKey(raw[i:keyEnd])
		i = skipJSONSpace(raw, keyEnd) + 1 // the ':'
		i = skipJSONSpace(raw, i)
		end := jsonValueEnd(raw, i)
		if _, seen := obj[key]; !seen {
			obj[key] = raw[i:end]
		} else if !twice {
			dup, twice = key, true
		}
		i = skipJSONSpace(raw, end)
		if raw[i] == ',' {
			i++
		}
	}
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && isJSONSpace(rune(b[i])) {
		i++
	}
	return i
}

// jsonValueEnd returns the end of the valid JSON value starting at b[i].
func jsonValueEnd(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 { // the end of the enclosing object: a number or literal ended
				return i
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// jsonKey unescapes a JSON string holding an object key.
func jsonKey(quoted []byte) string {
	body := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body)
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return string(body) // the decoder checked the syntax already
	}
	return s
}

// objectCells fills cells from one object's keys: exact match first, then
// trimmed and case-insensitive. It returns a rejection reason when two keys
// match a mapping name equally well.
func (rd *reader) objectCells(obj map[string]json.RawMessage, cells []cell) string {
	why := ""
	for i := range rd.fields {
		name := rd.fields[i].source
		raw, ok := obj[name]
		if !ok {
			var found string
			want := strings.TrimSpace(name)
			for k, v := range obj {
				if !strings.EqualFold(strings.TrimSpace(k), want) {
					continue
				}
				if ok {
					if why == "" {
						why = fmt.Sprintf("keys %q and %q both match %q", min(found, k), max(found, k), name)
					}
					raw, ok = nil, false
					break
				}
				raw, found, ok = v, k, true
			}
		}
		cells[i] = jsonCell(raw, ok)
	}
	return why
}

// jsonCell turns a JSON value into the text the CSV path would see.
// Numbers keep their literal text, so "12" and 12 convert alike.
func jsonCell(raw json.RawMessage, ok bool) cell {
	if !ok || len(raw) == 0 {
		return cell{}
	}
	switch raw[0] {
	case 'n':
		return cell{}
	case '{', '[':
		return cell{present: true, nested: true}
	case '"':
		body := raw[1 : len(raw)-1]
		if bytes.IndexByte(body, '\\') < 0 || !utf8.Valid(body) {
			// Invalid UTF-8 is kept as is, for the row check to reject.
			return cell{s: string(body), present: true}
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			// The decoder already checked the syntax; keep the raw text.
			return cell{s: string(body), present: true}
		}
		return cell{s: s, present: true}
	default: // number, true, false
		return cell{s: string(raw), present: true}
	}
}

func (rd *reader) jsonError(err error, row int, dec *json.Decoder, lt *lineTracker) error {
	if e := rd.streamError(err, row); e != nil {
		return e
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// Offset counts the offending byte: a line break there (in a string,
		// say) belongs to the line it ends.
		msg := se.Error()
		line := lt.lineAt(se.Offset - 1)
		if start := lt.startLine(); start < line {
			// An object left open shows only on a later line.
			msg += fmt.Sprintf(" (in the object that starts on line %d)", start)
		}
		return rd.syntaxError(row, line, msg)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		what := "unexpected end of file"
		if rd.st.Format == "json" {
			what += " (the array is not closed with ])"
		}
		return rd.syntaxError(row, lt.endLine(), what)
	}
	return fmt.Errorf("reading %s: row %d: %w", rd.name, row, err)
}

func (rd *reader) syntaxError(row, line int, msg string) error {
	return &FileError{File: rd.name, Row: row,
		Problem: fmt.Sprintf("JSON syntax error at line %d: %s", line, msg),
		Hint:    "fix the file or export it again"}
}

// lineTracker counts line breaks in what the JSON decoder reads, keeping the
// bytes of the current row so an error offset can be turned into a line.
type lineTracker struct {
	r     io.Reader
	base  int64 // stream offset of buf[0]
	lines int   // line breaks before base
	buf   []byte
}

func (t *lineTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.buf = append(t.buf, p[:n]...)
	return n, err
}

// mark forgets the bytes before stream offset off (a row ended there).
func (t *lineTracker) mark(off int64) {
	k := min(max(int(off-t.base), 0), len(t.buf))
	t.lines += bytes.Count(t.buf[:k], []byte{'\n'})
	t.buf = t.buf[k:]
	t.base += int64(k)
}

// endLine returns the line of the last byte read.
func (t *lineTracker) endLine() int {
	return t.lines + bytes.Count(bytes.TrimRight(t.buf, "\n"), []byte{'\n'}) + 1
}

// startLine returns the line where the current row's value starts: its
// first byte after the mark that is not white space or array punctuation.
func (t *lineTracker) startLine() int {
	i := bytes.IndexFunc(t.buf, func(r rune) bool { return !isJSONSpace(r) && r != ',' && r != '[' })
	if i < 0 {
		return t.endLine()
	}
	return t.lineAt(t.base + int64(i))
}

// lineAt returns the 1-based line of stream offset off (at or after the mark).
func (t *lineTracker) lineAt(off int64) int {
	k := min(max(int(off-t.base), 0), len(t.buf))
	return t.lines + bytes.Count(t.buf[:k], []byte{'\n'}) + 1
}
