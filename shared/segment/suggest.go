package segment

import (
	"strings"
	"unicode"
)

// suggest returns the header name closest to want, or "" when none is close
// enough to be a likely typo.
func suggest(want string, header []string) string {
	w := foldName(want)
	best, bestD := "", max(1, len([]rune(w))/3)+1
	for _, h := range header {
		if len(h) > 200 {
			continue // not a column name worth comparing; keeps this cheap
		}
		if d := distance(w, foldName(h)); d < bestD {
			best, bestD = h, d
		}
	}
	return best
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

// distance is the Levenshtein edit distance between a and b, in runes.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
