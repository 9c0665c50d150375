package sim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/simkit"
)

const key = "ortto-test-key"

func start(t *testing.T, opts sim.Options) (*sim.Server, string) {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = key
	}
	s := sim.New(opts)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/v1"
}

// call sends a hand-written request, as any client would.
func call(t *testing.T, base, path, apiKey, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("X-Api-Key", apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("answer %d is not JSON: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, doc
}

func mergeBody(people ...string) string {
	return `{"people": [` + strings.Join(people, ",") + `], "merge_by": ["str::email"], "merge_strategy": 2, "find_strategy": 0, "async": false, "suppression_list_field_id": "str::email"}`
}

func errorCode(doc map[string]any) string {
	e, _ := doc["error"].(map[string]any)
	code, _ := e["code"].(string)
	msg, _ := e["message"].(string)
	return code + ": " + msg
}

// TestContractBreachesGetOrttosErrors: requests that break the documented
// contract get the error Ortto documents, and change nothing.
func TestContractBreachesGetOrttosErrors(t *testing.T) {
	t.Parallel()
	s, base := start(t, sim.Options{Region: "au", OtherRegions: map[string]string{"eu-key": "eu"}})
	many := make([]string, 101)
	for i := range many {
		many[i] = `{"fields": {"str::email": "p` + strings.Repeat("x", i%3) + `@example.com"}}`
	}
	ok := `{"fields": {"str::email": "ada@example.com"}}`
	tests := []struct {
		name, key, body string
		status          int
		want            string
	}{
		{"101 people", key, mergeBody(many...), 400, "1 to 100 people"},
		{"no people", key, mergeBody(), 400, "1 to 100 people"},
		{"no X-Api-Key", "", mergeBody(ok), 401, "X-Api-Key"},
		{"wrong key", "nope", mergeBody(ok), 401, "not valid"},
		{"a key of the eu region", "eu-key", mergeBody(ok), 401, "https://api.eu.ap3api.com"},
		{"unknown custom field", key, mergeBody(`{"fields": {"str::email": "ada@example.com", "str:cm:nope": "x"}}`), 400, `unknown field "str:cm:nope"`},
		{"a string in a boolean", key, mergeBody(`{"fields": {"str::email": "ada@example.com", "bol::p": "yes"}}`), 400, "true or false"},
		{"async", key, strings.Replace(mergeBody(ok), `"async": false`, `"async": true`, 1), 400, "synchronous"},
		{"one tag set and unset", key, mergeBody(`{"fields": {"str::email": "ada@example.com"}, "tags": ["VIP"], "unset_tags": ["VIP"]}`), 400, "both"},
	}
	for _, tt := range tests {
		status, doc := call(t, base, "/person/merge", tt.key, tt.body)
		if status != tt.status || !strings.Contains(errorCode(doc), tt.want) {
			t.Errorf("%s: %d %v; want %d naming %q", tt.name, status, doc, tt.status, tt.want)
		}
	}
	// A client that left /v1 out of its base URL hears where the paths are.
	if status, doc := call(t, strings.TrimSuffix(base, "/v1"), "/person/merge", key, mergeBody(ok)); status != 404 || !strings.Contains(errorCode(doc), "under /v1/") {
		t.Errorf("a path without /v1: %d %v; want 404 naming /v1/", status, doc)
	}
	if n := len(s.Dump().People); n != 0 {
		t.Errorf("%d people created by refused requests", n)
	}
	if c := s.Counters(); c.ByRoute["POST /person/merge"][401] != 3 {
		t.Errorf("counters %v", c.ByRoute)
	}
}

// TestSubscriptionAsOrtto: a new person is subscribed by default; an
// opt-out stays unless bol::p is sent, and "bol::p": true re-subscribes,
// as Ortto does, so an end-to-end test catches a client that sends it.
func TestSubscriptionAsOrtto(t *testing.T) {
	t.Parallel()
	s, base := start(t, sim.Options{})
	call(t, base, "/person/merge", key, mergeBody(`{"fields": {"str::email": "ada@example.com"}}`))
	if p := s.Dump().People[0]; !p.Subscribed || p.SMSSubscribed {
		t.Fatalf("a new person: %+v; want subscribed to email, not SMS", p)
	}
	if err := s.Unsubscribe("ada@example.com"); err != nil {
		t.Fatal(err)
	}
	call(t, base, "/person/merge", key, mergeBody(`{"fields": {"str::email": "ada@example.com", "str::first": "Ada"}}`))
	if p := s.Dump().People[0]; p.Subscribed || p.Fields["str::first"] != "Ada" {
		t.Fatalf("a merge without bol::p: %+v; want the opt-out kept, the name set", p)
	}
	call(t, base, "/person/merge", key, mergeBody(`{"fields": {"str::email": "ada@example.com", "bol::p": true}}`))
	if p := s.Dump().People[0]; !p.Subscribed {
		t.Fatal(`"bol::p": true did not re-subscribe`)
	}
}

func TestMergeOutcomesPerPerson(t *testing.T) {
	t.Parallel()
	f, err := simkit.ParseFaults(`reject=^bad@`)
	if err != nil {
		t.Fatal(err)
	}
	s, base := start(t, sim.Options{Faults: f})
	if _, err := s.CreateField("Orders", "integer"); err != nil {
		t.Fatal(err)
	}
	s.Suppress("gone@example.com")
	s.Tag("old@example.com", "VIP")
	status, doc := call(t, base, "/person/merge", key, mergeBody(
		`{"fields": {"str::email": "new@example.com", "int:cm:orders": 3}, "tags": ["VIP"]}`,
		`{"fields": {"str::email": "old@example.com", "int:cm:orders": 4}}`,
		`{"fields": {"str::email": "gone@example.com"}}`,
		`{"fields": {"str::email": "bad@example.com"}}`,
		`{"fields": {"str::first": "no email"}}`,
	))
	if status != 200 {
		t.Fatalf("%d %v", status, doc)
	}
	var got []string
	for _, e := range doc["people"].([]any) {
		m := e.(map[string]any)
		got = append(got, m["status"].(string))
	}
	if strings.Join(got, ",") != "created,merged,suppressed,error,error" {
		t.Fatalf("statuses %v", got)
	}
	st := s.Dump()
	if len(st.People) != 2 || strings.Join(st.Tagged("VIP"), ",") != "new@example.com,old@example.com" || st.People[0].Fields["int:cm:orders"] != int64(3) {
		t.Fatalf("state %+v", st)
	}
	if c := s.Counters(); c.Injected.Rejected != 1 || c.ContactsUpserted != 2 {
		t.Errorf("counters %+v", c)
	}
	// unset_tags under skip_non_existing: tags come off, nobody is created.
	call(t, base, "/person/merge", key, `{"people": [{"fields": {"str::email": "old@example.com"}, "unset_tags": ["VIP"]}, {"fields": {"str::email": "stranger@example.com"}, "unset_tags": ["VIP"]}], "merge_by": ["str::email"], "skip_non_existing": true}`)
	if st := s.Dump(); len(st.People) != 2 || strings.Join(st.Tagged("VIP"), ",") != "new@example.com" {
		t.Fatalf("after unset_tags: %+v", st)
	}
}

func TestRateLimitHintInBody(t *testing.T) {
	t.Parallel()
	_, base := start(t, sim.Options{RequestsPerSecond: 0.5, Burst: 1})
	call(t, base, "/person/custom-field/get", key, "")
	status, doc := call(t, base, "/person/custom-field/get", key, "")
	e, _ := doc["error"].(map[string]any)
	if status != 429 || e["code"] != "rate-limit" || e["try-in-seconds"].(float64) < 1 {
		t.Fatalf("%d %v", status, doc)
	}
}

func TestCustomFields(t *testing.T) {
	t.Parallel()
	s, base := start(t, sim.Options{})
	status, doc := call(t, base, "/person/custom-field/create", key, `{"name": "Loyalty Tier", "type": "text"}`)
	if status != 200 || doc["field"].(map[string]any)["id"] != "str:cm:loyalty-tier" {
		t.Fatalf("%d %v", status, doc)
	}
	if status, _ := call(t, base, "/person/custom-field/create", key, `{"name": "loyalty tier", "type": "text"}`); status != 400 {
		t.Errorf("a duplicate name: %d", status)
	}
	_, doc = call(t, base, "/person/custom-field/get", key, "")
	fields := doc["fields"].([]any)
	f := fields[0].(map[string]any)["field"].(map[string]any)
	if len(fields) != 1 || f["id"] != "str:cm:loyalty-tier" || f["display_type"] != "text" {
		t.Fatalf("fields %v", doc)
	}
	raw, err := s.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	var st sim.State
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&st); err != nil {
		t.Fatal(err)
	}
	again := sim.New(sim.Options{})
	if err := again.Load(st); err != nil || len(again.Dump().Fields) != 1 {
		t.Fatalf("Load: %v", err)
	}
}
