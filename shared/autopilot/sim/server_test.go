package sim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		key        string
		wantStatus int
		wantError  string
	}{
		{"missing key", "", http.StatusBadRequest, "no key provided"},
		{"wrong key", "nope", http.StatusUnauthorized, "unauthorized"},
		{"right key", testKey, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := start(t, sim.Options{})
			c.key = tt.key
			out := c.call("GET", "/account", nil, tt.wantStatus)
			if out["error"] != nil != (tt.wantError != "") || tt.wantError != "" && out["error"] != tt.wantError {
				t.Errorf("error = %v, want %q", out["error"], tt.wantError)
			}
			if got := s.Counters().ByStatus[tt.wantStatus]; got != 1 {
				t.Errorf("ByStatus[%d] = %d, want 1", tt.wantStatus, got)
			}
		})
	}
}

func TestAuthErrorsDoNotLeakKey(t *testing.T) {
	t.Parallel()
	_, c := start(t, sim.Options{})
	c.key = "secret-wrong-key"
	_, body, _ := c.send("GET", "/account", nil)
	if strings.Contains(string(body), c.key) || strings.Contains(string(body), testKey) {
		t.Errorf("401 answer %s shows a key", body)
	}
}

func TestUpsertSemantics(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	id := c.upsert(map[string]any{
		"Email": "Ann@Example.com", "FirstName": "Ann", "LastName": "Lee",
		"custom": map[string]any{"string--Loyalty--Tier": "gold", "integer--Orders": 3},
	})
	if !strings.HasPrefix(id, "person_") {
		t.Errorf("contact_id = %q, want person_ prefix", id)
	}
	// Same email, other case, fewer fields: same contact, unsent fields kept.
	id2 := c.upsert(map[string]any{"Email": "ann@example.com", "LastName": "Park", "custom": map[string]any{"integer--Orders": 4}})
	if id2 != id {
		t.Fatalf("second upsert id = %q, want %q", id2, id)
	}
	st := s.Dump()
	if len(st.Contacts) != 1 {
		t.Fatalf("contacts = %d, want 1", len(st.Contacts))
	}
	got := st.Contacts[0]
	want := sim.Contact{
		ContactID: id, Email: "Ann@Example.com",
		Fields: map[string]any{"FirstName": "Ann", "LastName": "Park"},
		Custom: map[string]any{"string--Loyalty--Tier": "gold", "integer--Orders": float64(4)},
		Lists:  []string{},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("contact = %+v, want %+v", got, want)
	}
	wantFields := []sim.CustomField{{Name: "Loyalty Tier", FieldType: "string"}, {Name: "Orders", FieldType: "integer"}}
	if !reflect.DeepEqual(st.CustomFields, wantFields) {
		t.Errorf("custom fields = %+v, want %+v", st.CustomFields, wantFields)
	}

	// A field sent as null is cleared.
	c.upsert(map[string]any{"Email": "ann@example.com", "LastName": nil})
	if _, ok := s.Dump().Contacts[0].Fields["LastName"]; ok {
		t.Error("LastName still set after sending null")
	}
}

// TestUpsertSubscription: an upsert applies "unsubscribed" both ways, as
// Autopilot does, and leaves the subscription alone without it; this is
// what lets an end-to-end test catch a client that re-subscribes people.
func TestUpsertSubscription(t *testing.T) {
	t.Parallel()
	unsubscribers := []struct {
		name  string
		unsub func(t *testing.T, s *sim.Server, c *apiClient)
	}{
		{"helper", func(t *testing.T, s *sim.Server, _ *apiClient) {
			if err := s.Unsubscribe("bob@example.com"); err != nil {
				t.Fatal(err)
			}
		}},
		{"route", func(_ *testing.T, _ *sim.Server, c *apiClient) {
			c.call("POST", "/contact/bob@example.com/unsubscribe", nil, http.StatusOK)
		}},
		{"single upsert true", func(_ *testing.T, _ *sim.Server, c *apiClient) {
			c.upsert(map[string]any{"Email": "bob@example.com", "unsubscribed": true})
		}},
		{"bulk upsert true", func(_ *testing.T, _ *sim.Server, c *apiClient) {
			c.call("POST", "/contacts", map[string]any{"contacts": []any{map[string]any{"Email": "Bob@example.com", "unsubscribed": true}}}, http.StatusOK)
		}},
	}
	followUps := []struct {
		name             string
		path             string
		contact          map[string]any
		wantUnsubscribed bool
	}{
		{"single upsert without the key", "/contact", map[string]any{"Email": "bob@example.com", "FirstName": "Bob"}, true},
		{"bulk upsert without the key", "/contacts", map[string]any{"Email": "BOB@example.com", "FirstName": "Bob"}, true},
		{"single upsert false", "/contact", map[string]any{"Email": "bob@example.com", "FirstName": "Bob", "unsubscribed": false}, false},
		{"bulk upsert false", "/contacts", map[string]any{"Email": "BOB@example.com", "FirstName": "Bob", "unsubscribed": false}, false},
	}
	for _, un := range unsubscribers {
		for _, fu := range followUps {
			t.Run(un.name+", then "+fu.name, func(t *testing.T) {
				t.Parallel()
				s, c := start(t, sim.Options{})
				c.upsert(map[string]any{"Email": "bob@example.com"})
				un.unsub(t, s, c)
				if got, _ := findContact(s.Dump(), "bob@example.com"); !got.Unsubscribed {
					t.Fatal("contact not unsubscribed")
				}
				body := map[string]any{"contact": fu.contact}
				if fu.path == "/contacts" {
					body = map[string]any{"contacts": []any{fu.contact}}
				}
				c.call("POST", fu.path, body, http.StatusOK)
				got, _ := findContact(s.Dump(), "bob@example.com")
				if got.Unsubscribed != fu.wantUnsubscribed {
					t.Errorf("unsubscribed = %v, want %v", got.Unsubscribed, fu.wantUnsubscribed)
				}
				if got.Fields["FirstName"] != "Bob" {
					t.Errorf("FirstName = %v, want the upsert applied", got.Fields["FirstName"])
				}
				doc := c.call("GET", "/contact/bob@example.com", nil, http.StatusOK)
				if doc["unsubscribed"] != fu.wantUnsubscribed {
					t.Errorf("GET unsubscribed = %v, want %v", doc["unsubscribed"], fu.wantUnsubscribed)
				}
			})
		}
	}
}

func TestUnsubscribeUnknown(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	c.call("POST", "/contact/nobody@example.com/unsubscribe", nil, http.StatusNotFound)
	err := s.Unsubscribe("nobody@example.com")
	if err == nil || strings.Contains(err.Error(), "nobody@") {
		t.Errorf("Unsubscribe(unknown) = %v, want an error that masks the email", err)
	}
}

func TestBulkUpsert(t *testing.T) {
	t.Parallel()
	contacts := func(n int, domain string) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = map[string]any{"Email": fmt.Sprintf("u%03d@%s", i, domain)}
		}
		return out
	}
	s, c := start(t, sim.Options{})
	out := c.call("POST", "/contacts", map[string]any{"contacts": contacts(100, "ok.example")}, http.StatusOK)
	if ids, _ := out["contact_ids"].([]any); len(ids) != 100 {
		t.Fatalf("contact_ids = %d, want 100", len(ids))
	}
	c.call("POST", "/contacts", map[string]any{"contacts": contacts(101, "big.example")}, http.StatusBadRequest)
	c.call("POST", "/contacts", map[string]any{"contacts": []any{}}, http.StatusBadRequest)
	// One bad contact fails the whole request.
	bad := append(contacts(3, "mixed.example"), map[string]any{"FirstName": "no email"})
	c.call("POST", "/contacts", map[string]any{"contacts": bad}, http.StatusBadRequest)
	if n := len(s.Dump().Contacts); n != 100 {
		t.Errorf("contacts = %d, want 100 (rejected requests applied nothing)", n)
	}
	if got := s.Counters().ContactsUpserted; got != 100 {
		t.Errorf("ContactsUpserted = %d, want 100", got)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	_, c := start(t, sim.Options{})
	tests := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"malformed JSON", "POST", "/contact", `{"contact": {`, http.StatusBadRequest},
		{"no contact", "POST", "/contact", `{}`, http.StatusBadRequest},
		{"contact not object", "POST", "/contact", `{"contact": 5}`, http.StatusBadRequest},
		{"bad email", "POST", "/contact", `{"contact": {"Email": "nope"}}`, http.StatusBadRequest},
		{"bad custom key", "POST", "/contact", `{"contact": {"Email": "a@b.c", "custom": {"Tier": "x"}}}`, http.StatusBadRequest},
		{"bad unsubscribed", "POST", "/contact", `{"contact": {"Email": "a@b.c", "unsubscribed": "no"}}`, http.StatusBadRequest},
		{"unknown list", "POST", "/contact", `{"contact": {"Email": "a@b.c", "_autopilot_list": "contactlist_x"}}`, http.StatusNotFound},
		{"malformed bulk", "POST", "/contacts", `[1,2]`, http.StatusBadRequest},
		{"list without name", "POST", "/list", `{}`, http.StatusBadRequest},
		{"unknown route", "GET", "/nothing/here", nil, http.StatusNotFound},
		{"wrong method", "PUT", "/contact", `{}`, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		out := c.call(tt.method, tt.path, tt.body, tt.want)
		if msg, _ := out["message"].(string); msg == "" {
			t.Errorf("%s: answer %v has no message", tt.name, out)
		}
	}
	// Nothing of the above created a contact.
	c.call("GET", "/contact/a@b.c", nil, http.StatusNotFound)
}

func TestGetDeleteContact(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	listID := s.CreateList("VIP")
	id := c.upsert(map[string]any{"Email": "cy@example.com", "Company": "Acme", "_autopilot_list": listID,
		"custom": map[string]any{"boolean--Opted--In": true}})
	for _, key := range []string{id, "cy@example.com", "CY@EXAMPLE.COM"} {
		doc := c.call("GET", "/contact/"+key, nil, http.StatusOK)
		if doc["contact_id"] != id || doc["Email"] != "cy@example.com" || doc["Company"] != "Acme" {
			t.Errorf("GET %s = %v", key, doc)
		}
		if !reflect.DeepEqual(doc["lists"], []any{listID}) {
			t.Errorf("lists = %v, want [%s]", doc["lists"], listID)
		}
		if !reflect.DeepEqual(doc["custom"], map[string]any{"boolean--Opted--In": true}) {
			t.Errorf("custom = %v", doc["custom"])
		}
	}
	c.call("GET", "/contact/person_ffff", nil, http.StatusNotFound)
	c.call("DELETE", "/contact/"+id, nil, http.StatusOK)
	c.call("GET", "/contact/"+id, nil, http.StatusNotFound)
	c.call("DELETE", "/contact/"+id, nil, http.StatusNotFound)
	st := s.Dump()
	if len(st.Contacts) != 0 || len(st.Lists[0].Members) != 0 {
		t.Errorf("after delete: %+v", st)
	}
}

func TestNewEmail(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	id := c.upsert(map[string]any{"Email": "old@example.com", "FirstName": "Di"})
	c.upsert(map[string]any{"Email": "taken@example.com"})
	c.call("POST", "/contact", map[string]any{"contact": map[string]any{"Email": "old@example.com", "_NewEmail": "taken@example.com"}}, http.StatusBadRequest)
	if got := c.upsert(map[string]any{"Email": "old@example.com", "_NewEmail": "new@example.com"}); got != id {
		t.Errorf("rename id = %q, want %q", got, id)
	}
	c.call("GET", "/contact/old@example.com", nil, http.StatusNotFound)
	doc := c.call("GET", "/contact/new@example.com", nil, http.StatusOK)
	if doc["contact_id"] != id || doc["FirstName"] != "Di" {
		t.Errorf("renamed contact = %v", doc)
	}
	if n := len(s.Dump().Contacts); n != 2 {
		t.Errorf("contacts = %d, want 2", n)
	}
}

// pageAll walks a paged route and returns the emails in order and the
// number of pages.
func pageAll(t *testing.T, c *apiClient, path string, wantTotal int) ([]string, int) {
	t.Helper()
	var emails []string
	pages := 0
	next := path
	for {
		out := c.call("GET", next, nil, http.StatusOK)
		pages++
		if got := out["total_contacts"]; got != float64(wantTotal) {
			t.Fatalf("total_contacts = %v, want %d", got, wantTotal)
		}
		docs, _ := out["contacts"].([]any)
		for _, d := range docs {
			emails = append(emails, d.(map[string]any)["Email"].(string))
		}
		bm, has := out["bookmark"].(string)
		if !has {
			return emails, pages
		}
		if len(docs) != 100 {
			t.Fatalf("page %d has %d contacts and a bookmark, want 100", pages, len(docs))
		}
		next = path + "/" + bm
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
}

func TestPaging(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	listID := c.call("POST", "/list", map[string]any{"name": "All"}, http.StatusOK)["list_id"].(string)
	var want []string
	for b := range 3 {
		var batch []any
		n := 100
		if b == 2 {
			n = 55
		}
		for i := range n {
			e := fmt.Sprintf("p%03d@example.com", b*100+i)
			want = append(want, e)
			batch = append(batch, map[string]any{"Email": e, "_autopilot_list": listID})
		}
		c.call("POST", "/contacts", map[string]any{"contacts": batch}, http.StatusOK)
	}
	// A contact not on the list.
	c.upsert(map[string]any{"Email": "zz-outsider@example.com"})

	got, pages := pageAll(t, c, "/contacts", 256)
	if pages != 3 || !reflect.DeepEqual(got, append(append([]string{}, want...), "zz-outsider@example.com")) {
		t.Errorf("GET /contacts: %d pages, %d emails; want 3 pages in creation order", pages, len(got))
	}
	got, pages = pageAll(t, c, "/list/"+listID+"/contacts", 255)
	if pages != 3 || !reflect.DeepEqual(got, want) {
		t.Errorf("GET /list/.../contacts: %d pages, %d emails; want 3 pages of the 255 members", pages, len(got))
	}
	if n := len(s.Dump().Lists[0].Members); n != 255 {
		t.Errorf("dump members = %d, want 255", n)
	}
	c.call("GET", "/list/contactlist_nope/contacts", nil, http.StatusNotFound)
}

func TestListsAndMembership(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	a := c.call("POST", "/list", map[string]any{"name": "Newsletter"}, http.StatusOK)["list_id"].(string)
	dup := c.call("POST", "/list", map[string]any{"name": "Newsletter"}, http.StatusOK)["list_id"].(string)
	if a == dup || !strings.HasPrefix(a, "contactlist_") {
		t.Fatalf("list ids %q, %q: want two distinct contactlist_ ids", a, dup)
	}
	lists := c.call("GET", "/lists", nil, http.StatusOK)["lists"].([]any)
	if len(lists) != 2 || lists[0].(map[string]any)["title"] != "Newsletter" {
		t.Errorf("GET /lists = %v", lists)
	}
	c.upsert(map[string]any{"Email": "m@example.com"})
	member := "/list/" + a + "/contact/m@example.com"
	steps := []struct {
		method, path string
		want         int
	}{
		{"GET", member, http.StatusNotFound},
		{"POST", member, http.StatusOK},
		{"POST", member, http.StatusOK}, // idempotent
		{"GET", member, http.StatusOK},
		{"POST", "/list/" + a + "/contact/ghost@example.com", http.StatusNotFound},
		{"POST", "/list/contactlist_nope/contact/m@example.com", http.StatusNotFound},
		{"DELETE", member, http.StatusOK},
		{"GET", member, http.StatusNotFound},
		{"DELETE", member, http.StatusNotFound},
		{"DELETE", "/list/contactlist_nope/contact/m@example.com", http.StatusNotFound},
	}
	for i, st := range steps {
		if got, body, _ := c.send(st.method, st.path, nil); got != st.want {
			t.Errorf("step %d %s %s = %d %s, want %d", i, st.method, st.path, got, body, st.want)
		}
	}
	if err := s.AddToList(a, "fresh@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddToList("contactlist_nope", "fresh@example.com"); err == nil {
		t.Error("AddToList(unknown list) = nil, want an error")
	}
	c.call("GET", "/list/"+a+"/contact/fresh@example.com", nil, http.StatusOK)
}

func TestCustomFieldsAccountTriggers(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	c.upsert(map[string]any{"Email": "t@example.com", "custom": map[string]any{"date--Last--Order": "2024-01-02", "float--Spend": 9.5}})
	status, body, _ := c.send("GET", "/contacts/custom_fields", nil)
	var fields []sim.CustomField
	if err := json.Unmarshal(body, &fields); status != http.StatusOK || err != nil {
		t.Fatalf("custom_fields = %d %s (%v)", status, body, err)
	}
	want := []sim.CustomField{{Name: "Last Order", FieldType: "date"}, {Name: "Spend", FieldType: "float"}}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("custom_fields = %+v, want %+v", fields, want)
	}
	c.call("GET", "/account", nil, http.StatusOK)
	trig := c.call("GET", "/triggers", nil, http.StatusOK)["triggers"].([]any)
	if len(trig) == 0 {
		t.Fatal("no triggers")
	}
	tid := trig[0].(map[string]any)["trigger_id"].(string)
	c.call("POST", "/trigger/"+tid+"/contact/t@example.com", nil, http.StatusOK)
	c.call("POST", "/trigger/"+tid+"/contact/ghost@example.com", nil, http.StatusNotFound)
	c.call("POST", "/trigger/nope/contact/t@example.com", nil, http.StatusNotFound)
	entries := s.Dump().TriggerEntries
	if len(entries) != 1 || entries[0].TriggerID != tid || entries[0].Email != "t@example.com" {
		t.Errorf("trigger entries = %+v", entries)
	}
}

func TestDoubleSlashPaths(t *testing.T) {
	t.Parallel()
	_, c := start(t, sim.Options{})
	base := strings.TrimSuffix(c.base, "/v1")
	for _, p := range []string{"//v1/account", "/v1//account", "/v1/account/"} {
		c.base = base + p
		c.call("GET", "", nil, http.StatusOK)
	}
	// A client that left /v1 out of its base URL hears where the paths are.
	c.base = base
	if out := c.call("GET", "/lists", nil, http.StatusNotFound); !strings.Contains(fmt.Sprint(out["message"]), "under /v1/") {
		t.Errorf("GET /lists: %v; want the answer to name /v1/", out)
	}
}

func TestDumpAndCounters(t *testing.T) {
	t.Parallel()
	s, c := start(t, sim.Options{})
	vip := s.CreateList("VIP")
	all := s.CreateList("All")
	c.call("POST", "/contacts", map[string]any{"contacts": []any{
		map[string]any{"Email": "b@example.com", "_autopilot_list": vip},
		map[string]any{"Email": "a@example.com", "_autopilot_list": vip, "FirstName": "A"},
	}}, http.StatusOK)
	if err := s.AddToList(all, "b@example.com"); err != nil {
		t.Fatal(err)
	}
	c.call("GET", "/contact/zz@example.com", nil, http.StatusNotFound)
	c.key = ""
	c.call("GET", "/lists", nil, http.StatusBadRequest)

	st := s.Dump()
	want := sim.State{
		Contacts: []sim.Contact{
			{ContactID: "person_0000000000000002", Email: "a@example.com", Fields: map[string]any{"FirstName": "A"}, Lists: []string{vip}},
			{ContactID: "person_0000000000000001", Email: "b@example.com", Fields: map[string]any{}, Lists: []string{vip, all}},
		},
		Lists: []sim.List{
			{ID: all, Title: "All", Members: []string{"b@example.com"}},
			{ID: vip, Title: "VIP", Members: []string{"a@example.com", "b@example.com"}},
		},
		CustomFields: []sim.CustomField{},
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("Dump =\n%+v\nwant\n%+v", st, want)
	}
	// Dump is a deep copy.
	st.Contacts[0].Fields["FirstName"] = "changed"
	st.Contacts[0].Lists[0] = "changed"
	if again := s.Dump(); !reflect.DeepEqual(again, want) {
		t.Error("changing a Dump changed the simulator")
	}
	js, err := s.DumpJSON()
	if err != nil || !json.Valid(js) || !strings.Contains(string(js), `"contact_id": "person_0000000000000002"`) {
		t.Errorf("DumpJSON = %s, %v", js, err)
	}

	cn := s.Counters()
	if cn.Total != 3 || cn.ContactsUpserted != 2 {
		t.Errorf("Total = %d, ContactsUpserted = %d; want 3, 2", cn.Total, cn.ContactsUpserted)
	}
	wantRoutes := map[string]map[int]int{
		"POST /contacts":         {200: 1},
		"GET /contact/{contact}": {404: 1},
		"GET /lists":             {400: 1},
	}
	if !reflect.DeepEqual(cn.ByRoute, wantRoutes) {
		t.Errorf("ByRoute = %v, want %v", cn.ByRoute, wantRoutes)
	}
	if sum(cn.PerSecond) != 2 {
		t.Errorf("PerSecond = %v, want 2 authenticated requests in all", cn.PerSecond)
	}
	cn.ByStatus[200] = 99
	if s.Counters().ByStatus[200] != 1 {
		t.Error("changing Counters changed the simulator")
	}
	s.ResetCounters()
	if cn := s.Counters(); cn.Total != 0 || len(cn.ByStatus) != 0 || len(cn.PerSecond) != 0 {
		t.Errorf("after reset: %+v", cn)
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestUpserted: Upserted names exactly the contacts upserts applied, so a
// delta test can compare it with what should have gone out.
func TestUpserted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		send func(c *apiClient)
		want map[string]int
	}{
		{"single", func(c *apiClient) { c.upsert(map[string]any{"Email": "Ann@Example.com"}) }, map[string]int{"ann@example.com": 1}},
		{"bulk, one sent twice", func(c *apiClient) {
			c.call("POST", "/contacts", map[string]any{"contacts": []any{
				map[string]any{"Email": "a@example.com"}, map[string]any{"Email": "b@example.com"},
			}}, http.StatusOK)
			c.upsert(map[string]any{"Email": "A@example.com"})
		}, map[string]int{"a@example.com": 2, "b@example.com": 1}},
		{"rejected bulk applies nothing", func(c *apiClient) {
			c.call("POST", "/contacts", map[string]any{"contacts": []any{
				map[string]any{"Email": "a@example.com"}, map[string]any{"Email": "x@bad.example"},
			}}, http.StatusBadRequest)
		}, map[string]int{}},
		{"other routes are not upserts", func(c *apiClient) {
			c.call("GET", "/contact/a@example.com", nil, http.StatusNotFound)
		}, map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := start(t, sim.Options{Faults: sim.Faults{RejectEmails: `@bad\.example$`}})
			tt.send(c)
			got := s.Upserted()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Upserted = %v, want %v", got, tt.want)
			}
			got["changed@example.com"] = 1
			if again := s.Upserted(); !reflect.DeepEqual(again, tt.want) {
				t.Errorf("changing the copy changed the simulator: %v", again)
			}
			s.ResetCounters()
			if after := s.Upserted(); len(after) != 0 {
				t.Errorf("after ResetCounters: %v", after)
			}
		})
	}
}
