package segment_test

import (
	"testing"

	"github.com/segpilot/segpilot/shared/segment"
)

func TestMaskEmail(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"john@example.com": "j***@example.com",
		"é@x.org":          "é***@x.org",
		"@x.org":           "***@x.org",
		"a@b@x.org":        "a***@x.org",
		"not-an-email":     "***",
		"":                 "***",
	}
	for in, want := range tests {
		if got := segment.MaskEmail(in); got != want {
			t.Errorf("MaskEmail(%q) = %q, want %q", in, got, want)
		}
	}
	if got := segment.MaskEmails("rejected email(s): ann@x.com, bob@y.org"); got != "rejected email(s): a***@x.com, b***@y.org" {
		t.Errorf("MaskEmails = %q", got)
	}
}
