package suggest_test

import (
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/suggest"
)

func TestDistance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"list", "list", 0},
		{"lsit", "list", 1}, // a swap of neighbours is one edit
		{"segmnet", "segment", 1},
		{"mach", "match", 1},
		{"colour", "color", 1},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{"ca", "abc", 3}, // optimal string alignment: no edit of a swapped pair
	}
	for _, tt := range tests {
		if got := suggest.Distance([]rune(tt.a), []rune(tt.b)); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := suggest.Distance([]rune(tt.b), []rune(tt.a)); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d (symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestClosest(t *testing.T) {
	t.Parallel()
	two := func(int) int { return 2 }
	tests := []struct {
		s          string
		candidates []string
		want       string
	}{
		{"Lsit", []string{"mode", "list"}, "list"},
		{"list", []string{"list", "lists"}, "lists"}, // never s itself
		{"abcdef", []string{"mode", "list"}, ""},
		{"lis", []string{"list", "lisp"}, "list"}, // ties: the earliest
		{strings.Repeat("a", 300), []string{strings.Repeat("a", 299)}, ""},
	}
	for _, tt := range tests {
		got, ok := suggest.Closest(tt.s, tt.candidates, strings.ToLower, two)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Closest(%q, %v) = %q, %v; want %q", tt.s, tt.candidates, got, ok, tt.want)
		}
	}
}
