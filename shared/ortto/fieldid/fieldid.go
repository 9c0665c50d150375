// Package fieldid is how Ortto turns a custom field's name into the name
// part of its id ("Loyalty Tier" → "loyalty-tier" in str:cm:loyalty-tier):
// the simulator assigns ids by it and the adapter suggests ids with it.
// Its own package because the adapter's tests import the simulator.
package fieldid

import "strings"

// Kebab writes a name as Ortto writes it in a field's id: lower case, runs
// of anything but letters and digits as one dash, none at either end.
func Kebab(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
			continue
		}
		dash = true
	}
	return b.String()
}
