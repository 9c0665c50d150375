package plan

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/segment"
)

func TestHashCanonicalNumbers(t *testing.T) {
	t.Parallel()
	with := func(v any) segment.Profile {
		return segment.Profile{Email: "a@x", Custom: segment.CustomOf(map[string]any{"integer--Orders": v})}
	}
	tests := []struct {
		name string
		a, b any
		same bool
	}{
		{"int64 and json.Number", int64(12), json.Number("12"), true},
		{"int and float64", 12, 12.0, true},
		{"json.Number 12.0 and int64", json.Number("12.0"), int64(12), true},
		{"float and json.Number", 0.1, json.Number("0.1"), true},
		{"large float", 1e21, json.Number("1e+21"), true},
		{"big int64 exact", int64(9007199254740993), json.Number("9007199254740993"), true},
		{"number and string differ", int64(12), "12", false},
		{"different numbers", int64(12), int64(13), false},
		{"bool and string differ", true, "true", false},
	}
	for _, tc := range tests {
		if got := Hash(with(tc.a)) == Hash(with(tc.b)); got != tc.same {
			t.Errorf("%s: equal=%v, want %v", tc.name, got, tc.same)
		}
	}
	if h := Hash(with(int64(1))); len(h) != 32 {
		t.Errorf("hash %q: want 32 hex digits", h)
	}
	// field boundaries are length-prefixed, so moving text between fields changes the hash
	if Hash(segment.Profile{Email: "a@x", FirstName: "ab"}) == Hash(segment.Profile{Email: "a@x", FirstName: "a", LastName: "b"}) {
		t.Error("field boundary ambiguity")
	}
}

// TestHashIsPinned fixes the hash of two profiles: snapshots store these
// hashes, so any change to the canonical encoding or the algorithm makes the
// next run of every export resend every contact. Change the pins only on
// purpose, and say so in the release notes.
func TestHashIsPinned(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    segment.Profile
		want string
	}{
		{segment.Profile{Email: "ann@example.com"}, "ee293a2cfe55b01784d3a38d79ca4052"},
		{segment.Profile{Email: "ann@example.com", FirstName: "Ann", LastName: "Müller", Custom: segment.CustomOf(map[string]any{
			"integer--Orders": int64(12), "string--Tier": "gold", "boolean--Vip": true, "float--Score": 0.5, "date--Since": "2024-01-31",
		})}, "ed5a368bb82f78b2c51d9c7144f99f63"},
	}
	for _, tc := range tests {
		if got := Hash(tc.p); got != tc.want {
			t.Errorf("Hash(%+v) = %s, want %s", tc.p, got, tc.want)
		}
	}
}

func TestJSONEncodingMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	p := segment.Profile{
		Email:     "zoë@example.com",
		FirstName: "Q\"uote\\ \t\n\x01 <b>&",
		LastName:  "bad\xffutf8 \u2028 line",
		Custom: segment.CustomOf(map[string]any{
			"string--Tier":   "gold",
			"integer--N":     int64(-7),
			"float--F":       1.5e-7,
			"float--G":       1e21,
			"float--H":       12.0,
			"boolean--B":     false,
			"date--D":        "2024-01-02",
			"integer--Num":   json.Number("42"),
			"string--Nested": nil,
		}),
	}
	var e encoder
	got, err := appendJSON(nil, &p, e.sortedCustom(p.Custom))
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("invalid JSON %s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("appendJSON\n got %s\nwant %s", got, want)
	}
	if _, err := appendJSON(nil, &segment.Profile{Email: "a@x", Custom: segment.CustomOf(map[string]any{"float--F": math.Inf(1)})}, []customValue{{key: "float--F", val: math.Inf(1)}}); err == nil {
		t.Error("Inf accepted")
	}
}

func TestHashSurvivesBatchRoundTrip(t *testing.T) {
	t.Parallel()
	rows := []row{{p: segment.Profile{Email: "a@x", FirstName: "Ann", Custom: segment.CustomOf(map[string]any{
		"integer--Orders": int64(9007199254740993), "float--Score": 2.5, "float--Whole": 3.0, "boolean--VIP": true, "date--Since": "2024-05-01",
	})}}}
	p, dir, err := build(t, rows, "", Options{Mode: ModeUpsert})
	if err != nil {
		t.Fatal(err)
	}
	r := readBack(t, dir, p, DefaultBatchSize)
	u := r.upserts[0]
	if Hash(u.Profile) != Hash(rows[0].p) {
		t.Errorf("hash changed across the round trip: original %s, decoded %s", Hash(rows[0].p), Hash(u.Profile))
	}
	if v, _ := u.Profile.Custom.Get("integer--Orders"); v != json.Number("9007199254740993") {
		t.Errorf("custom number not kept exactly: %#v", v)
	}
	if !strings.Contains(r.snapshot, "a@x\t"+Hash(u.Profile)+"\n") {
		t.Errorf("snapshot %q lacks the hash", r.snapshot)
	}
}

func TestReadBatchErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{``, `{"seq":1}{"seq":2}`, `{"seq":0}`, `{"seq":1,"upserts":[`} {
		if _, err := ReadBatch([]byte(in)); err == nil {
			t.Errorf("ReadBatch(%q) accepted", in)
		}
	}
}

func TestSnapshotHelpers(t *testing.T) {
	t.Parallel()
	snap := "a@x\th1\nb@x\th2\nc@x\th3\n"
	var out bytes.Buffer
	if err := FilterSnapshot(strings.NewReader(snap), &out, func(e string) bool { return e == "b@x" }); err != nil {
		t.Fatal(err)
	}
	if out.String() != "a@x\th1\nc@x\th3\n" {
		t.Errorf("filtered %q", out.String())
	}
	for in, want := range map[string]int{snap: 3, "": 0, "a@x\th1": 1} {
		if n, err := SnapshotLen(strings.NewReader(in)); err != nil || n != want {
			t.Errorf("SnapshotLen(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
	if _, err := SnapshotLen(strings.NewReader("b@x\th\na@x\th\n")); err == nil {
		t.Error("unsorted snapshot accepted")
	}
	if err := FilterSnapshot(strings.NewReader("junk\n"), &out, func(string) bool { return false }); err == nil {
		t.Error("malformed snapshot accepted")
	}
}
