package segment

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzPlainASCIIEmail checks that the one-pass check agrees with
// validateEmail on every lower-case ASCII string: it may only take the
// fast path for addresses the full validation accepts.
func FuzzPlainASCIIEmail(f *testing.F) {
	for _, s := range []string{
		"a@b.co", "a.b@c.d", ".a@b.c", "a.@b.c", "a..b@c.d", "a@b..c", "a@.b", "a@b.", "a@b", "@b.c", "a@",
		"a@-b.c", "a@b-.c", "a@b.c-", "a@b-c.d", "a@@b.c", "a b@c.d", "a<b@c.d", "a@b_c.d", "a+tag@x.io",
		strings.Repeat("a", 64) + "@b.c", strings.Repeat("a", 65) + "@b.c", "a@" + strings.Repeat("b", 63) + ".c",
		"a@" + strings.Repeat("b", 64) + ".c", "a@" + strings.Repeat("b.", 130) + "c", "\x7f@b.c", "a\x00@b.c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i := 0; i < len(s); i++ {
			if s[i] >= utf8.RuneSelf || ('A' <= s[i] && s[i] <= 'Z') {
				return // the fast path only sees lower-case ASCII
			}
		}
		fast, full := plainASCIIEmail(s), validateEmail(s) == nil
		if fast != full {
			t.Fatalf("plainASCIIEmail(%q) = %t, validateEmail accepts: %t", s, fast, full)
		}
	})
}
