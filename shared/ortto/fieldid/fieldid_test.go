package fieldid_test

import (
	"testing"

	"github.com/segpilot/segpilot/shared/ortto/fieldid"
)

func TestKebab(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, want string }{
		{"Loyalty Tier", "loyalty-tier"},
		{"  Lifetime--Orders!! ", "lifetime-orders"},
		{"VIP_2024", "vip-2024"},
		{"Café", "caf"}, // non-ASCII letters are separators, as in Ortto's ids
		{"!!!", ""},
	} {
		if got := fieldid.Kebab(tt.name); got != tt.want {
			t.Errorf("Kebab(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
