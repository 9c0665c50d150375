package segment

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Email length limits (RFC 5321 as amended by errata 1690).
const (
	maxEmailLen  = 254
	maxLocalLen  = 64
	maxDomainLen = 255
	maxLabelLen  = 63
)

var errNoEmail = errors.New("no email")

// emailError is a rejection reason for an address that is not valid.
func emailError(why string) error { return errors.New("invalid email: " + why) }

// NormalizeEmail trims s, puts it in Unicode NFC, lower-cases it and checks
// that it is a plain address (no display name, one @, a dotted domain). The
// error's text is meant to be shown to people as the rejection reason; it
// never contains the address itself.
func NormalizeEmail(s string) (string, error) {
	s, ascii, ok := cleanTextASCII(s)
	if !ok {
		return "", emailError("invalid UTF-8")
	}
	return normalizeClean(s, ascii)
}

// normalizeClean is NormalizeEmail for a value cleanTextASCII already cleaned;
// ascii says it is all ASCII.
func normalizeClean(s string, ascii bool) (string, error) {
	if s == "" {
		return "", errNoEmail
	}
	// strings.ToLower returns s itself when it is ASCII without upper case.
	s = strings.ToLower(s)
	if ascii && plainASCIIEmail(s) && !strings.Contains(s, "xn--") {
		return s, nil
	}
	if err := validateEmail(s); err != nil {
		return "", err
	}
	return asciiDomain(s)
}

// asciiDomain puts the domain of a valid address in its ASCII form
// (IDNA punycode, the form mail systems exchange and any API accepts), so
// user@bücher.de and user@xn--bcher-kva.de are one contact. Labels already
// ASCII are kept; "xn--" labels are checked. The local part is left as is:
// it has no ASCII form.
func asciiDomain(s string) (string, error) {
	at := strings.IndexByte(s, '@')
	domain := s[at+1:]
	var b strings.Builder
	for i, label := range strings.Split(domain, ".") {
		if i > 0 {
			b.WriteByte('.')
		}
		if isASCII(label) && !strings.HasPrefix(label, "xn--") {
			b.WriteString(label)
			continue
		}
		a, err := idna.Lookup.ToASCII(label)
		if err != nil {
			return "", emailError("the domain is not a valid internationalised domain name")
		}
		b.WriteString(a)
	}
	if b.String() == domain {
		return s, nil
	}
	out := s[:at+1] + b.String()
	// The ASCII form is longer: check the lengths again.
	if err := validateEmail(out); err != nil {
		return "", err
	}
	return out, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Byte classes for plainASCIIEmail.
const (
	clLocal  = 1 << iota // atext or '.': allowed before the @
	clDomain             // a-z, 0-9, '-' or '.': allowed after the @
)

var emailClass = func() (t [256]uint8) {
	for c := 0; c < utf8.RuneSelf; c++ {
		if isAtext(byte(c)) || c == '.' {
			t[c] |= clLocal
		}
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' || c == '.' {
			t[c] |= clDomain
		}
	}
	return t
}()

// plainASCIIEmail reports whether a lower-cased ASCII address passes every
// check of validateEmail, in one pass. It only says yes when validateEmail
// would; on no, validateEmail finds the reason.
func plainASCIIEmail(s string) bool {
	if len(s) > maxEmailLen {
		return false
	}
	at := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '@' {
			at = i
			break
		}
		if emailClass[c]&clLocal == 0 || (c == '.' && (i == 0 || s[i-1] == '.')) {
			return false
		}
	}
	if at <= 0 || at > maxLocalLen || s[at-1] == '.' {
		return false
	}
	// Domain: dotted labels of 1..63 of a-z, 0-9 and inner hyphens.
	label, dots := 0, 0
	for i := at + 1; i < len(s); i++ {
		c := s[i]
		if emailClass[c]&clDomain == 0 {
			return false
		}
		switch c {
		case '.':
			if label == 0 || s[i-1] == '-' {
				return false
			}
			label = 0
			dots++
		case '-':
			if label == 0 {
				return false
			}
			label++
		default:
			label++
		}
		if label > maxLabelLen {
			return false
		}
	}
	return dots > 0 && label > 0 && s[len(s)-1] != '-'
}

// validateEmail checks a trimmed, NFC, lower-cased address.
func validateEmail(s string) error {
	if strings.ContainsAny(s, "<>") {
		return emailError("has a display name or angle brackets; give only the address")
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			continue
		}
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' {
			return emailError("contains a space")
		}
		if c < 0x20 || c == 0x7f {
			return emailError("contains a control character")
		}
	}
	if !ascii {
		for _, r := range s {
			switch {
			case unicode.IsSpace(r):
				return emailError("contains a space")
			case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
				return emailError("contains a control character")
			}
		}
	}
	if len(s) > maxEmailLen {
		return emailError(fmt.Sprintf("longer than %d characters", maxEmailLen))
	}
	at := strings.IndexByte(s, '@')
	if at < 0 {
		return emailError("missing @")
	}
	if strings.IndexByte(s[at+1:], '@') >= 0 {
		return emailError("more than one @")
	}
	local, domain := s[:at], s[at+1:]
	if err := validateLocal(local); err != nil {
		return err
	}
	return validateDomain(domain)
}

func validateLocal(local string) error {
	switch {
	case local == "":
		return emailError("nothing before the @")
	case len(local) > maxLocalLen:
		return emailError(fmt.Sprintf("the part before the @ is longer than %d characters", maxLocalLen))
	case local[0] == '.' || local[len(local)-1] == '.':
		return emailError("the part before the @ starts or ends with a dot")
	case strings.Contains(local, ".."):
		return emailError("two dots in a row")
	}
	for i, r := range local {
		if r < utf8.RuneSelf {
			if !isAtext(byte(r)) && r != '.' {
				return emailError(fmt.Sprintf("character %q is not allowed", r))
			}
			continue
		}
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(local[i:]); size == 1 {
				return emailError("invalid UTF-8")
			}
		}
		if !unicode.IsLetter(r) && !unicode.IsNumber(r) && !unicode.IsMark(r) {
			return emailError(fmt.Sprintf("character %q is not allowed", r))
		}
	}
	return nil
}

// isAtext reports whether c may appear unquoted in the local part
// (RFC 5322 atext); quoted local parts are not accepted.
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func validateDomain(domain string) error {
	switch {
	case domain == "":
		return emailError("nothing after the @")
	case len(domain) > maxDomainLen:
		return emailError(fmt.Sprintf("the domain is longer than %d characters", maxDomainLen))
	case domain[0] == '.' || domain[len(domain)-1] == '.':
		return emailError("the domain starts or ends with a dot")
	case strings.Contains(domain, ".."):
		return emailError("two dots in a row")
	case strings.IndexByte(domain, '.') < 0:
		return emailError("the domain has no dot")
	}
	for label := range strings.SplitSeq(domain, ".") {
		if len(label) > maxLabelLen {
			return emailError(fmt.Sprintf("a domain label is longer than %d characters", maxLabelLen))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return emailError("a domain label starts or ends with a hyphen")
		}
		for i, r := range label {
			if r < utf8.RuneSelf {
				c := byte(r)
				if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' || ('A' <= c && c <= 'Z') {
					continue
				}
				return emailError(fmt.Sprintf("character %q is not allowed in the domain", r))
			}
			if r == utf8.RuneError {
				if _, size := utf8.DecodeRuneInString(label[i:]); size == 1 {
					return emailError("invalid UTF-8")
				}
			}
			// Internationalised domains: letters, digits and combining marks.
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r) {
				return emailError(fmt.Sprintf("character %q is not allowed in the domain", r))
			}
		}
	}
	return nil
}
