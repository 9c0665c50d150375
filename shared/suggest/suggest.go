// Package suggest finds the likely intended word for a mistyped one: the
// "did you mean" of config keys, modes, export names and column headers.
package suggest

// maxLen bounds the strings compared, so a hostile file cannot make the
// quadratic distance expensive.
const maxLen = 200

// Closest returns the candidate nearest to s, compared after fold, when
// it is at most limit(len of folded s, in runes) edits away (a swap of
// two neighbouring letters counts as one edit). Ties go to the earliest
// candidate; s itself is never suggested.
func Closest(s string, candidates []string, fold func(string) string, limit func(n int) int) (string, bool) {
	if len(s) > maxLen {
		return "", false
	}
	a := []rune(fold(s))
	best, bestDist := "", limit(len(a))+1
	for _, c := range candidates {
		if c == s || len(c) > maxLen {
			continue
		}
		if d := Distance(a, []rune(fold(c))); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best, best != ""
}

// Distance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours.
func Distance(a, b []rune) int {
	// Three rows suffice: the swap looks two rows back.
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
