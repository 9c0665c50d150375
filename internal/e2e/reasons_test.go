package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/simkit"
)

// reasonCase is a row of a segment file that one row-rejection reason
// rejects: the reason's words for each destination ("" when that
// destination takes the row).
type reasonCase struct {
	name, row         string
	autopilot, ortto  string
	ownTitleAndSyntax bool // the reason must name the export's destination and its field syntax
}

// The custom fields of every value type, as each destination writes them.
var reasonFields = map[string]string{
	"autopilot": `        Tier: string--Tier
        Orders: integer--Orders
        Spend: float--Spend
        Vip: boolean--Vip
        Joined: date--Joined
`,
	"ortto": `        Tier: str:cm:tier
        Orders: int:cm:orders
        Spend: {field: int:cm:spend, decimal: true}
        Vip: bol:cm:vip
        Joined: dtz:cm:joined
    createFields: true
`,
}

const reasonHeader = "EmailAddress,FirstName,LastName,Tier,Orders,Spend,Vip,Joined"

// reasonCSV holds a row for every reason the reader, the planner, the
// adapters and the destinations give, in CSV; reasonJSON those only JSON
// has. Row n of each is its n-th case.
var (
	reasonCSV = []reasonCase{
		{name: "valid", row: "ok@example.com,Ada,Lovelace,gold,12,3.5,true,2024-05-31"},
		{name: "no email", row: ",Ada,,,,,,", autopilot: "no email", ortto: "no email"},
		{name: "invalid email", row: "not-an-email,,,,,,,", autopilot: "invalid email", ortto: "invalid email"},
		{name: "invalid UTF-8", row: "utf8@example.com,\xff,,,,,,", autopilot: "invalid UTF-8", ortto: "invalid UTF-8"},
		{name: "longer than 64 KiB", row: "long@example.com,,," + strings.Repeat("x", 70<<10) + ",,,,", autopilot: "64 KiB", ortto: "64 KiB"},
		{name: "field count", row: "short@example.com,Ada", autopilot: "row has 2 fields", ortto: "row has 2 fields"},
		{name: "not an integer", row: "word@example.com,,,,twelve,,,", autopilot: "is not an integer", ortto: "is not an integer"},
		{name: "integer out of range", row: "huge@example.com,,,,99999999999999999999,,,", autopilot: "out of range", ortto: "out of range"},
		{name: "integer beyond 2^53", row: "big@example.com,,,,9007199254740993,,,", autopilot: "9007199254740991", ortto: "9007199254740991", ownTitleAndSyntax: true},
		{name: "not a number", row: "nan@example.com,,,,,abc,,", autopilot: "is not a number", ortto: "is not a number"},
		{name: "decimal out of range", row: "inf@example.com,,,,,1e400,,", autopilot: "out of range", ortto: "out of range"},
		{name: "decimal too close to zero", row: "tiny@example.com,,,,,1e-400,,", autopilot: "too close to zero", ortto: "too close to zero"},
		{name: "not a boolean", row: "bool@example.com,,,,,,maybe,", autopilot: "is not a boolean", ortto: "is not a boolean"},
		{name: "not a date", row: "date@example.com,,,,,,,01/02/2024", autopilot: "is not a date", ortto: "is not a date"},
		{name: "duplicate", row: "dup@example.com,First,,,,,,", autopilot: "duplicate of row 16", ortto: "duplicate of row 16"},
		{name: "its winner", row: "dup@example.com,Second,,,,,,"},
		{name: "name over Ortto's 255", row: "longname@example.com," + strings.Repeat("n", 256) + ",,,,,,", ortto: "Ortto keeps at most 255"},
		{name: "text over Ortto's 255", row: "longtier@example.com,,," + strings.Repeat("t", 256) + ",,,,", ortto: "Ortto keeps at most 255"},
		{name: "decimal × 1000 beyond int64", row: "spend@example.com,,,,,1e17,,", ortto: "beyond what Ortto keeps"},
		{name: "refused by the destination", row: "refused@example.com,,,,,,,", autopilot: "rejected by Autopilot", ortto: "rejected by Ortto"},
	}
	reasonJSON = []reasonCase{
		{name: "object in a column", row: `{"EmailAddress": "j1@example.com", "Tier": {"a": 1}}`, autopilot: "object or array", ortto: "object or array"},
		{name: "key twice", row: `{"EmailAddress": "j2@example.com", "Tier": "a", "Tier": "b"}`, autopilot: "appears twice", ortto: "appears twice"},
		{name: "two keys match", row: `{"EmailAddress": "j3@example.com", "tier": "a", "TIER": "b"}`, autopilot: "both match", ortto: "both match"},
		{name: "not an object", row: `5`, autopilot: "not a JSON object", ortto: "not a JSON object"},
		{name: "JSON integer beyond 2^53", row: `{"EmailAddress": "j5@example.com", "Orders": 9007199254740993}`, autopilot: "9007199254740991", ortto: "9007199254740991", ownTitleAndSyntax: true},
		{name: "valid", row: `{"EmailAddress": "j6@example.com", "Orders": 7}`},
	}
)

// How each destination is named and writes a custom field; a reason for
// an export to one must show none of the other's.
var (
	speaks = map[string]*regexp.Regexp{
		"autopilot": regexp.MustCompile(`Autopilot|\b(string|integer|float|date|boolean)--|\bfloat\b`),
		"ortto":     regexp.MustCompile(`Ortto|\b(str|txt|int|bol|dtz|geo|phn):[a-z]*:`),
	}
	ownSyntax = map[string]*regexp.Regexp{
		"autopilot": regexp.MustCompile(`\bstring--`),
		"ortto":     regexp.MustCompile(`\bstr:cm:`),
	}
	titles = map[string]string{"autopilot": "Autopilot", "ortto": "Ortto"}
)

// TestRejectionReasonsSpeakTheExportsDestination: every row-rejection
// reason, the reader's, the planner's, the adapter's and the
// destination's, is given for an export to each kind; each row is
// rejected with its reason in rejected.csv, and no reason names the
// other destination or uses its field syntax. Where a reason names a
// destination (an integer beyond 2^53), it names the export's own, with
// its own syntax for the fix.
func TestRejectionReasonsSpeakTheExportsDestination(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		other := "ortto"
		if d.kind == "ortto" {
			other = "autopilot"
		}
		conn, _, _ := strings.Cut(strings.TrimSpace(d.connection), ":")
		config := "connections:\n" + d.connection + "    consent: true\n    requestsPerSecond: 100\n" +
			"exports:\n  vip-newsletter:\n    connection: " + conn + "\n    segment: vip-customers\n    list: " + listTitle +
			"\n    match:\n      email: EmailAddress\n      firstName: FirstName\n      lastName: LastName\n      custom:\n" +
			reasonFields[d.kind] + "    mode: upsert\n"
		h := newHarness(t, d, simOptions{Faults: simkit.Faults{RejectEmails: `^refused@`}}, config)

		csvRows := []string{reasonHeader}
		for _, c := range reasonCSV {
			csvRows = append(csvRows, c.row)
		}
		var jsonRows []string
		for _, c := range reasonJSON {
			jsonRows = append(jsonRows, c.row)
		}
		for _, file := range []struct {
			name  string
			data  string
			cases []reasonCase
		}{
			{"a.csv", strings.Join(csvRows, "\n") + "\n", reasonCSV},
			{"b.jsonl", strings.Join(jsonRows, "\n") + "\n", reasonJSON},
		} {
			res := h.drop(file.name, []byte(file.data))
			if len(res) != 1 || res[0].Status != run.StatusSucceeded {
				t.Fatalf("%s: %+v", file.name, res)
			}
			reasons := map[int]string{}
			for _, rec := range readCSV(t, h.p.Store, h.report(res[0]).Rejected)[1:] {
				n, err := strconv.Atoi(rec[0])
				if err != nil {
					t.Fatalf("%s: rejected.csv row %q", file.name, rec)
				}
				reasons[n] = rec[2]
			}
			for i, c := range file.cases {
				want := map[string]string{"autopilot": c.autopilot, "ortto": c.ortto}[d.kind]
				got, rejected := reasons[i+1]
				switch {
				case want == "" && rejected:
					t.Errorf("%s row %d (%s): rejected (%s); want it sent", file.name, i+1, c.name, got)
				case want == "":
				case !rejected:
					t.Errorf("%s row %d (%s): not rejected; want %q", file.name, i+1, c.name, want)
				case !strings.Contains(got, want):
					t.Errorf("%s row %d (%s): %q; want %q", file.name, i+1, c.name, got, want)
				case speaks[other].MatchString(got):
					t.Errorf("%s row %d (%s), an export to %s: %q speaks %s (%q)", file.name, i+1, c.name, titles[d.kind], got, titles[other], speaks[other].FindString(got))
				case c.ownTitleAndSyntax && (!strings.Contains(got, titles[d.kind]) || !ownSyntax[d.kind].MatchString(got)):
					t.Errorf("%s row %d (%s): %q; want it to name %s and its field syntax (%s)", file.name, i+1, c.name, got, titles[d.kind], ownSyntax[d.kind])
				}
			}
		}
	})
}
