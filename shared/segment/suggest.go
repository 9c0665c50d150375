package segment

import (
	"strings"
	"unicode"

	"github.com/segpilot/segpilot/shared/suggest"
)

// closestColumn returns the header name closest to want, or "" when none
// is close enough to be a likely typo: one edit per three letters.
func closestColumn(want string, header []string) string {
	s, _ := suggest.Closest(want, header, foldName, func(n int) int { return max(1, n/3) })
	return s
}

// foldName drops case, spaces and punctuation: "E-mail Address" and
// "emailaddress" are the same column to a person.
func foldName(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			return unicode.ToLower(r)
		}
		return -1
	}, s)
}
