package segment

import (
	"strings"
	"testing"
)

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want, err string
	}{
		{in: "  Jo@Example.COM\t", want: "jo@example.com"},
		{in: "o'brien+tag@sub.example.co.uk", want: "o'brien+tag@sub.example.co.uk"},
		{in: "JOSE\u0301@B\u00dcCHER.de", want: "jos\u00e9@xn--bcher-kva.de"}, // NFD in, NFC out; the domain in ASCII
		// An internationalised domain has one form, the ASCII one mail
		// systems exchange, so both spellings are one contact.
		{in: "user@b\u00fccher.de", want: "user@xn--bcher-kva.de"},
		{in: "user@xn--bcher-kva.de", want: "user@xn--bcher-kva.de"},
		{in: "user@XN--BCHER-KVA.de", want: "user@xn--bcher-kva.de"},
		{in: "user@\uff42\u00fccher.de", want: "user@xn--bcher-kva.de"}, // fullwidth b
		{in: "user@sub.b\u00fccher.de", want: "user@sub.xn--bcher-kva.de"},
		{in: "user@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", want: "user@xn--e1afmkfd.xn--p1ai"},
		{in: "z\u00f6e@example.com", want: "z\u00f6e@example.com"}, // the local part stays as given
		{in: "user@xn--a.de", err: "invalid email: the domain is not a valid internationalised domain name"},
		{in: "user@xn--bcher-kv\u00e4.de", err: "invalid email: the domain is not a valid internationalised domain name"},
		{in: "", err: "no email"},
		{in: " \u00a0 ", err: "no email"},
		{in: "jo", err: "invalid email: missing @"},
		{in: "Jo <jo@example.com>", err: "invalid email: has a display name or angle brackets; give only the address"},
		{in: "a@b@example.com", err: "invalid email: more than one @"},
		{in: "jo smith@example.com", err: "invalid email: contains a space"},
		{in: "jo\u00a0smith@example.com", err: "invalid email: contains a space"},
		{in: "jo\x01@example.com", err: "invalid email: contains a control character"},
		{in: "jo\u200b@example.com", err: "invalid email: contains a control character"},
		{in: "@example.com", err: "invalid email: nothing before the @"},
		{in: "jo@", err: "invalid email: nothing after the @"},
		{in: "jo@example", err: "invalid email: the domain has no dot"},
		{in: ".jo@example.com", err: "invalid email: the part before the @ starts or ends with a dot"},
		{in: "j..o@example.com", err: "invalid email: two dots in a row"},
		{in: "jo@example..com", err: "invalid email: two dots in a row"},
		{in: "jo@example.com.", err: "invalid email: the domain starts or ends with a dot"},
		{in: "jo@-x.com", err: "invalid email: a domain label starts or ends with a hyphen"},
		{in: "jo@x_y.com", err: `invalid email: character '_' is not allowed in the domain`},
		{in: "jo;x@y.com", err: `invalid email: character ';' is not allowed`},
		{in: strings.Repeat("a", 64) + "@example.com", want: strings.Repeat("a", 64) + "@example.com"},
		{in: strings.Repeat("a", 65) + "@example.com", err: "invalid email: the part before the @ is longer than 64 characters"},
		{in: "jo@" + strings.Repeat("a", 63) + ".com", want: "jo@" + strings.Repeat("a", 63) + ".com"},
		{in: "jo@" + strings.Repeat("a", 64) + ".com", err: "invalid email: a domain label is longer than 63 characters"},
		{in: "jo@" + strings.Repeat("abcdefghi.", 25) + "com", err: "invalid email: longer than 254 characters"},
		{in: "jo\xff@example.com", err: "invalid email: invalid UTF-8"},
	}
	for _, tt := range tests {
		got, err := NormalizeEmail(tt.in)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("NormalizeEmail(%q) = %q, %q; want %q, %q", tt.in, got, gotErr, tt.want, tt.err)
		}
	}
}

func TestNormalizeEmailDoesNotAllocateForCleanASCII(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := NormalizeEmail("someone.else+tag@example.com"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("NormalizeEmail allocated %v times for a clean ASCII address, want 0", allocs)
	}
}

func TestSafeCSVCell(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":              "",
		"jo@x.com":      "jo@x.com",
		"=1+2":          "'=1+2",
		"+33 1 23":      "'+33 1 23",
		"-2":            "'-2",
		"@SUM(A1)":      "'@SUM(A1)",
		"\tx":           "'\tx",
		"\rx":           "'\rx",
		"a=b":           "a=b",
		"'already":      "'already",
		"\u00e9=accent": "\u00e9=accent",
	} {
		if got := SafeCSVCell(in); got != want {
			t.Errorf("SafeCSVCell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConvert(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ, in string
		want    any
		bad     bool
	}{
		{typ: "integer", in: "12", want: int64(12)},
		{typ: "integer", in: "-12", want: int64(-12)},
		{typ: "integer", in: "12.00", want: int64(12)},
		{typ: "integer", in: "12.5", bad: true},
		{typ: "integer", in: "12.", bad: true},
		{typ: "integer", in: "1e3", bad: true},
		{typ: "integer", in: "0x10", bad: true},
		{typ: "integer", in: "9223372036854775808", bad: true},
		// Autopilot takes JSON numbers, doubles: beyond 2^53-1 they round.
		{typ: "integer", in: "9007199254740991", want: int64(9007199254740991)},
		{typ: "integer", in: "-9007199254740991", want: int64(-9007199254740991)},
		{typ: "integer", in: "9007199254740992", bad: true},
		{typ: "integer", in: "-9007199254740993.0", bad: true},
		{typ: "float", in: "1.25", want: 1.25},
		{typ: "float", in: "-1e3", want: -1000.0},
		{typ: "float", in: "Inf", bad: true},
		{typ: "float", in: "0x1p-2", bad: true},
		{typ: "float", in: "1,5", bad: true},
		{typ: "float", in: "1e400", bad: true},
		{typ: "float", in: "1e-400", bad: true}, // would arrive as 0
		{typ: "float", in: "0e-400", want: 0.0},
		{typ: "float", in: "-0.000e5", want: 0.0},
		{typ: "boolean", in: "TRUE", want: true},
		{typ: "boolean", in: "Yes", want: true},
		{typ: "boolean", in: "1", want: true},
		{typ: "boolean", in: "no", want: false},
		{typ: "boolean", in: "0", want: false},
		{typ: "boolean", in: "y", bad: true},
		{typ: "date", in: "2024-02-29", want: "2024-02-29"},
		{typ: "date", in: "2023-02-29", bad: true},
		{typ: "date", in: "2024-05-31T14:00:00Z", want: "2024-05-31T14:00:00Z"},
		{typ: "date", in: "2024-05-31T14:00:00.120+02:00", want: "2024-05-31T14:00:00.12+02:00"},
		{typ: "date", in: "2024-05-31 14:00:00", bad: true},
		{typ: "date", in: "01/02/2006", bad: true},
		{typ: "date", in: "31.05.2024", bad: true},
		{typ: "string", in: "anything", want: "anything"},
	}
	for _, tt := range tests {
		got, why := convert(&field{typ: tt.typ, beyond: "beyond"}, tt.in)
		if tt.bad != (why != "") || (!tt.bad && got != tt.want) {
			t.Errorf("convert(%s, %q) = %#v, %q; want %#v (bad=%t)", tt.typ, tt.in, got, why, tt.want, tt.bad)
		}
	}
	if _, why := convert(&field{typ: "float"}, "1e-400"); why != "is too close to zero for a decimal number (it would arrive as 0)" {
		t.Errorf("reason for a float underflow: %q", why)
	}
	if _, why := convert(&field{typ: "float"}, "-1e400"); why != "is out of range for a decimal number" {
		t.Errorf("reason for a float overflow: %q", why)
	}
	// An integer past 2^53-1 is refused in the words of the export's
	// destination: its name, and its text field's syntax for the fix.
	for _, tt := range []struct {
		dest Destination
		want string
	}{
		{Destination{Title: "Autopilot", TextField: "string--Name"}, "is beyond ±9007199254740991, the largest integer Autopilot is sure to keep exactly (it may arrive rounded); map the column to a text field (string--Name) to keep every digit"},
		{Destination{Title: "Ortto", TextField: "str:cm:name"}, "is beyond ±9007199254740991, the largest integer Ortto is sure to keep exactly (it may arrive rounded); map the column to a text field (str:cm:name) to keep every digit"},
		{Destination{}, "is beyond ±9007199254740991, the largest integer a JSON number is sure to keep exactly (it may arrive rounded); map the column to a text field to keep every digit"},
	} {
		fs, err := compileMapping(Mapping{Email: "e", Custom: []CustomField{{Source: "n", Key: "k", Type: "integer"}}, Destination: tt.dest})
		if err != nil {
			t.Fatal(err)
		}
		if _, why := convert(&fs[1], "12345678901234567"); why != tt.want {
			t.Errorf("reason for a big integer to %q: %q, want %q", tt.dest.Title, why, tt.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	header := []string{"E-mail Address", "First Name", "Orders", "Tier"}
	for want, s := range map[string]string{
		"EmailAddress": "E-mail Address",
		"FirstName":    "First Name",
		"Order":        "Orders",
		"Country":      "",
		"T":            "",
	} {
		if got := closestColumn(want, header); got != s {
			t.Errorf("closestColumn(%q) = %q, want %q", want, got, s)
		}
	}
}
