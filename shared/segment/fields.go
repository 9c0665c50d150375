package segment

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// maxFieldLen is the longest value accepted in a mapped column; longer
// values reject the row (no real name, email or custom value is this long).
const maxFieldLen = 64 << 10

// ErrBadMapping reports a mapping that cannot be applied to any file (no
// email source, an unknown custom type); the configuration must be fixed.
var ErrBadMapping = errors.New("invalid mapping")

type fieldKind uint8

const (
	kindEmail fieldKind = iota
	kindFirst
	kindLast
	kindCustom
)

// field is one mapped source column, compiled from the Mapping.
type field struct {
	kind    fieldKind
	source  string // name in the mapping
	setting string // configuration key to fix, e.g. "match.firstName"
	name    string // name to use in row reasons: the header as found, for CSV
	key     string // the destination's custom field key
	typ     string // custom type
	col     int    // CSV column index
	// beyond is the reason for an integer past 2^53-1: it names the
	// export's destination and how a text field is written there.
	beyond string
}

var customTypes = map[string]bool{"string": true, "integer": true, "float": true, "date": true, "boolean": true}

// compileMapping turns a Mapping into fields, email first.
func compileMapping(m Mapping) ([]field, error) {
	if strings.TrimSpace(m.Email) == "" {
		return nil, fmt.Errorf("%w: match.email is empty", ErrBadMapping)
	}
	fs := []field{{kind: kindEmail, source: m.Email, setting: "match.email"}}
	if m.FirstName != "" {
		fs = append(fs, field{kind: kindFirst, source: m.FirstName, setting: "match.firstName"})
	}
	if m.LastName != "" {
		fs = append(fs, field{kind: kindLast, source: m.LastName, setting: "match.lastName"})
	}
	keys := map[string]bool{}
	beyond := beyondExactReason(m.Destination)
	for _, c := range m.Custom {
		if keys[c.Key] {
			return nil, fmt.Errorf("%w: match.custom feeds %q from two columns; each custom field takes one", ErrBadMapping, c.Key)
		}
		keys[c.Key] = true
		typ := c.Type
		if typ == "" {
			typ, _, _ = strings.Cut(c.Key, "--")
		}
		setting := "match.custom." + c.Source
		switch {
		case strings.TrimSpace(c.Source) == "":
			return nil, fmt.Errorf("%w: match.custom has an empty column name", ErrBadMapping)
		case c.Key == "":
			return nil, fmt.Errorf("%w: %s has no field key", ErrBadMapping, setting)
		case !customTypes[typ]:
			return nil, fmt.Errorf("%w: %s: type %q is not one of string, integer, float, date, boolean", ErrBadMapping, setting, typ)
		}
		fs = append(fs, field{kind: kindCustom, source: c.Source, setting: setting, key: c.Key, typ: typ, beyond: beyond})
	}
	for i := range fs {
		fs[i].name = fs[i].source
	}
	return fs, nil
}

// cell is one raw mapped value of a row.
type cell struct {
	s       string
	present bool
	nested  bool // a JSON object or array
	// memo, when set, says s is already as cleanTextASCII leaves valid
	// text and holds what buildProfile works out from it: a value of a
	// Parquet dictionary, worked out once for all the rows that hold it.
	// Never set for the email, whose cleaning also says if it is ASCII.
	memo *textMemo
}

// textMemo is what buildProfile works out from one cleaned value of a
// field, whatever the row: its control character, when the field is
// checked for one, and its conversion, for a custom field.
type textMemo struct {
	ctrl    rune
	hasCtrl bool
	v       any
	why     string
}

// memoFor works out s, a cleaned value of f, as buildProfile does.
func memoFor(f *field, s string) textMemo {
	var m textMemo
	if s == "" {
		return m
	}
	if f.kind != kindCustom || f.typ == "string" {
		m.ctrl, m.hasCtrl = controlChar(s)
	}
	if f.kind == kindCustom && !m.hasCtrl {
		m.v, m.why = convert(f, s)
	}
	return m
}

// buildProfile validates and converts one row's mapped cells (in field
// order) into a profile. On failure it returns the rejection reason.
func buildProfile(fs []field, cells []cell) (Profile, string) {
	var p Profile
	emailASCII := false
	for i := range fs {
		c := &cells[i]
		if !c.present {
			continue
		}
		if c.nested {
			return p, fmt.Sprintf("column %q: an object or array is not allowed here", fs[i].name)
		}
		if len(c.s) > maxFieldLen {
			return p, fmt.Sprintf("column %q is longer than 64 KiB", fs[i].name)
		}
		if c.memo != nil {
			continue
		}
		s, ascii, ok := cleanTextASCII(c.s)
		if !ok {
			return p, fmt.Sprintf("invalid UTF-8 in column %q", fs[i].name)
		}
		c.s = s
		if i == 0 {
			emailASCII = ascii
		}
	}
	if !cells[0].present || cells[0].s == "" {
		return p, errNoEmail.Error()
	}
	var email string
	var err error
	if emailASCII {
		// Cleaning ASCII twice changes nothing: skip NormalizeEmail's pass.
		email, err = normalizeClean(cells[0].s, true)
	} else {
		email, err = NormalizeEmail(cells[0].s)
	}
	if err != nil {
		return p, err.Error()
	}
	p.Email = email
	for i := 1; i < len(fs); i++ {
		c := cells[i]
		if !c.present || c.s == "" {
			continue
		}
		// Text may hold tabs and line breaks (a cell typed on two lines);
		// no other control character (NUL, escape, DEL, C1) is sent:
		// destinations drop, refuse or show them.
		m := c.memo
		if m == nil {
			memo := memoFor(&fs[i], c.s)
			m = &memo
		}
		if m.hasCtrl {
			return Profile{}, fmt.Sprintf("column %q has a control character (U+%04X), which is never sent", fs[i].name, m.ctrl)
		}
		switch fs[i].kind {
		case kindFirst:
			p.FirstName = c.s
		case kindLast:
			p.LastName = c.s
		case kindCustom:
			v, why := m.v, m.why
			if why != "" {
				return Profile{}, fmt.Sprintf("column %q: %q %s", fs[i].name, shorten(c.s), why)
			}
			if p.Custom == nil {
				p.Custom = make(Custom, 0, len(fs)-i)
			}
			p.Custom = append(p.Custom, CustomValue{Key: fs[i].key, Value: v})
		}
	}
	p.Custom.sort() // fields come in mapping order
	return p, ""
}

// controlChar returns the first control character (Unicode Cc: U+0000 to
// U+001F, U+007F to U+009F) in s, valid UTF-8, other than a tab, line feed
// or carriage return.
func controlChar(s string) (rune, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20:
			if c != '\t' && c != '\n' && c != '\r' {
				return rune(c), true
			}
		case c == 0x7f:
			return rune(c), true
		case c == 0xc2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] <= 0x9f:
			return rune(s[i+1]), true // U+0080 to U+009F, encoded C2 80 to C2 9F
		}
	}
	return 0, false
}

// reportEmail is the email as given, for the rejection report: trimmed,
// bounded (no valid address is longer than 254 octets, and a huge cell must
// not be copied on) and with invalid UTF-8 replaced so reports can encode it.
func reportEmail(c cell) string {
	const limit = 320
	if !c.present || c.nested {
		return ""
	}
	s := c.s
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
}

// shorten bounds a value quoted in a rejection reason.
func shorten(s string) string {
	const limit = 40
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// cleanTextASCII trims white space and puts s in Unicode NFC, and reports
// whether s is all ASCII. ASCII needs neither NFC nor Unicode trimming,
// which keeps the common case free of allocations. ok (the last result) is
// false when s is not valid UTF-8.
func cleanTextASCII(s string) (string, bool, bool) {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if (s[i]|s[i+1]|s[i+2]|s[i+3]|s[i+4]|s[i+5]|s[i+6]|s[i+7])&0x80 != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			if !utf8.ValidString(s) {
				return s, false, false
			}
			return norm.NFC.String(strings.TrimSpace(s)), false, true
		}
	}
	return trimASCII(s), true, true
}

func trimASCII(s string) string {
	start, end := 0, len(s)
	for start < end && isASCIISpace(s[start]) {
		start++
	}
	for end > start && isASCIISpace(s[end-1]) {
		end--
	}
	return s[start:end]
}

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// convert turns a cleaned, non-empty value into f's type. why completes
// the sentence `"value" ...` when the value does not fit.
func convert(f *field, s string) (v any, why string) {
	switch f.typ {
	case "integer":
		return parseInteger(s, f.beyond)
	case "float":
		return parseFloat(s)
	case "boolean":
		switch strings.ToLower(s) {
		case "true", "yes", "1":
			return true, ""
		case "false", "no", "0":
			return false, ""
		}
		return nil, "is not a boolean (use true/false, yes/no or 1/0)"
	case "date":
		return parseDate(s)
	default: // "string": compileMapping admits no other type
		return s, ""
	}
}

// parseFloat accepts decimal numbers, kept as the nearest double (what a
// float field is), but never lets a value become infinite or zero.
func parseFloat(s string) (any, string) {
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && !strings.ContainsAny(s, "_xXpP"):
		return nil, "is out of range for a decimal number"
	case err != nil || math.IsInf(f, 0) || math.IsNaN(f) || strings.ContainsAny(s, "_xXpP"):
		return nil, "is not a number"
	case f == 0:
		mantissa, _, _ := strings.Cut(strings.ToLower(s), "e")
		if strings.ContainsAny(mantissa, "123456789") {
			return nil, "is too close to zero for a decimal number (it would arrive as 0)"
		}
	}
	return f, ""
}

// parseInteger accepts exact integers only, within what a JSON number
// keeps exactly; a zero fraction ("12.0", as spreadsheets export whole
// numbers) is still exact. beyond is the reason past that.
func parseInteger(s, beyond string) (any, string) {
	digits := s
	if whole, frac, ok := strings.Cut(s, "."); ok && frac != "" && strings.Trim(frac, "0") == "" {
		digits = whole
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return nil, "is out of range for an integer"
		}
		return nil, "is not an integer"
	}
	if n > maxExactInt || n < -maxExactInt {
		return nil, beyond
	}
	return n, ""
}

// maxExactInt is the largest integer a JSON number keeps exactly where it
// is read as a double (Autopilot; JavaScript): 2^53-1. Beyond it values
// may arrive rounded, which must not happen silently.
const maxExactInt = 1<<53 - 1

// beyondExactReason is the reason for an integer past maxExactInt, in
// the words of the export's destination d: its name, and its syntax for
// the text field that keeps every digit.
func beyondExactReason(d Destination) string {
	const past = "is beyond ±9007199254740991, the largest integer "
	if d.Title == "" {
		return past + "a JSON number is sure to keep exactly (it may arrive rounded); map the column to a text field to keep every digit"
	}
	return past + d.Title + " is sure to keep exactly (it may arrive rounded); map the column to a text field (" + d.TextField + ") to keep every digit"
}

// parseDate accepts 2006-01-02 (kept as a date) and RFC 3339 timestamps
// (kept as RFC 3339). Slashed dates are refused: 01/02/2006 is January in
// one country and February in the next.
func parseDate(s string) (any, string) {
	if len(s) == len("2006-01-02") {
		if t, err := time.Parse(time.DateOnly, s); err == nil {
			return t.Format(time.DateOnly), ""
		}
	} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.Format(time.RFC3339Nano), ""
	}
	return nil, "is not a date (use YYYY-MM-DD or RFC 3339, e.g. 2024-05-31T14:00:00Z)"
}
