package config

import "strings"

// maxSuggestLen bounds the strings compared, so a hostile file cannot make
// the quadratic distance expensive.
const maxSuggestLen = 64

// suggest returns the candidate closest to s (ignoring case, a swap of two
// neighbouring letters counting as one edit), if it is close enough to be a
// likely typo. Ties go to the earliest candidate.
func suggest(s string, candidates []string) (string, bool) {
	if len(s) > maxSuggestLen {
		return "", false
	}
	a := []rune(strings.ToLower(s))
	limit := 1 + len(a)/5
	if limit > 3 {
		limit = 3
	}
	best, bestDist := "", limit+1
	for _, c := range candidates {
		if c == s || len(c) > maxSuggestLen {
			continue
		}
		if d := distance(a, []rune(strings.ToLower(c))); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best, best != ""
}

// distance is the optimal string alignment distance between a and b.
func distance(a, b []rune) int {
	// Three rows suffice: the transposition looks two rows back.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
