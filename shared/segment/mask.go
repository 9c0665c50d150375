package segment

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// MaskEmail keeps an email recognisable in logs and errors without
// revealing it: "john@example.com" becomes "j***@example.com".
func MaskEmail(email string) string {
	at := strings.LastIndexByte(email, '@')
	if at < 0 {
		return "***"
	}
	first, size := utf8.DecodeRuneInString(email)
	if at == 0 || first == utf8.RuneError && size <= 1 {
		return "***" + email[at:]
	}
	return string(first) + "***" + email[at:]
}

var emailPattern = regexp.MustCompile(`[^\s@"'<>(),;:/\[\]]+@[^\s@"'<>(),;:/\[\]]+`)

// MaskEmails masks every email inside s (a URL path, an API's message).
func MaskEmails(s string) string {
	return emailPattern.ReplaceAllStringFunc(s, MaskEmail)
}
