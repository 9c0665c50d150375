package segment

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
)

// delimiters are the separators detected in a CSV header, in order of
// preference on a tie.
var delimiters = []rune{',', ';', '\t'}

// matchHeader finds every mapped column. A missing optional column is an
// error too: a typo in the mapping would otherwise blank that data quietly.
// has introduces the list of columns in an error: "the header has".
func (rd *reader) matchHeader(header []string, has string) error {
	for i := range rd.fields {
		f := &rd.fields[i]
		col, matches := matchColumn(header, f.source)
		if len(matches) > 1 {
			return &FileError{File: rd.name, Column: f.source,
				Problem: fmt.Sprintf("%d columns match %s: %s", len(matches), f.setting, quoteList(matches, 20)),
				Hint:    fmt.Sprintf("rename one of them, or make %s match one exactly", f.setting)}
		}
		if col < 0 {
			hint := fmt.Sprintf("fix %s in the export's configuration or the file's header", f.setting)
			if s := closestColumn(f.source, header); s != "" {
				hint = fmt.Sprintf("did you mean %q? ", s) + hint
			}
			if n := strings.ToLower(rd.name); strings.Contains(n, ".json") && rd.st.Format == "csv" {
				hint += " (the file is named like JSON but its content reads as CSV)"
			}
			return &FileError{File: rd.name, Column: f.source,
				Problem: fmt.Sprintf("column not found (%s); %s %s", f.setting, has, quoteList(header, 20)),
				Hint:    hint}
		}
		f.col = col
		f.name = header[col]
	}
	return nil
}

// matchColumn finds name in header: exactly first, then trimmed and
// case-insensitively. More than one match is returned as matches.
func matchColumn(header []string, name string) (int, []string) {
	col, matches := -1, []string(nil)
	for i, h := range header {
		if h == name {
			col, matches = i, append(matches, h)
		}
	}
	if len(matches) > 0 {
		return col, matches
	}
	want := strings.TrimSpace(name)
	for i, h := range header {
		if strings.EqualFold(strings.TrimSpace(h), want) {
			col, matches = i, append(matches, h)
		}
	}
	return col, matches
}

func quoteList(names []string, limit int) string {
	var b strings.Builder
	for i, n := range names {
		if i == limit {
			fmt.Fprintf(&b, " and %d more", len(names)-limit)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", shorten(n))
	}
	return b.String()
}

// detectDelimiter picks, among comma, semicolon and tab, the one that splits
// the header into the email column plus the most others.
func detectDelimiter(br *bufio.Reader, email string) (rune, error) {
	buf, err := br.Peek(bufSize)
	if err != nil && err != io.EOF {
		return 0, err
	}
	best, bestN, bestEmail := delimiters[0], -1, false
	for _, d := range delimiters {
		rec, err := readExcelRecord(buf[:recordEnd(buf, 0, byte(d))], d)
		if err != nil {
			continue // a broken header is reported by the real read
		}
		col, _ := matchColumn(rec, email)
		hasEmail := col >= 0
		if (hasEmail && !bestEmail) || (hasEmail == bestEmail && len(rec) > bestN) {
			best, bestN, bestEmail = d, len(rec), hasEmail
		}
	}
	return best, nil
}

// csvError turns a CSV read error into the error Read returns; row 0 is
// the header. atEOF tells whether the whole file had been read when the
// error came up: an open quote then is unterminated.
func (rd *reader) csvError(err error, row, prefixLines int, atEOF bool) error {
	if e := rd.streamError(err, row); e != nil {
		return e
	}
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("reading %s: row %d: %w", rd.name, row, err)
	}
	fe := &FileError{File: rd.name, Row: row, Hint: "fix the quoting or export the file again"}
	line := pe.Line + prefixLines
	switch {
	case errors.Is(pe.Err, csv.ErrQuote) && atEOF:
		fe.Problem = fmt.Sprintf("unterminated quoted field (opened on line %d)", pe.StartLine+prefixLines)
	case errors.Is(pe.Err, csv.ErrQuote):
		fe.Problem = fmt.Sprintf("text after a closing quote (line %d, byte %d)", line, pe.Column)
		fe.Hint = `a quote inside a quoted field must be doubled (""); ` + fe.Hint
	default:
		fe.Problem = fmt.Sprintf("%v (line %d)", pe.Err, line)
	}
	if row == 0 {
		fe.Problem = "in the header: " + fe.Problem
	}
	return fe
}

func atEOF(br *bufio.Reader) bool {
	_, err := br.Peek(1)
	return err == io.EOF
}
