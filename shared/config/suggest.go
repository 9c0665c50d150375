package config

import (
	"strings"

	"github.com/segpilot/segpilot/shared/suggest"
)

// maxSuggestLen: keys and names longer than this are not typos of ours.
const maxSuggestLen = 64

// closest returns the candidate closest to s, ignoring case, if it is
// close enough to be a likely typo: one edit per five letters, at most 3.
func closest(s string, candidates []string) (string, bool) {
	if len(s) > maxSuggestLen {
		return "", false
	}
	return suggest.Closest(s, candidates, strings.ToLower, func(n int) int { return min(1+n/5, 3) })
}
