package sim_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

// TestLoadRoundTrips: a dump loaded into a new simulator (as JSON, the way
// the demo keeps it between runs) is the same state, and the new simulator
// carries on without reusing ids.
func TestLoadRoundTrips(t *testing.T) {
	t.Parallel()
	first, c := start(t, sim.Options{})
	listID := c.call("POST", "/list", map[string]any{"name": "VIP"}, http.StatusOK)["list_id"].(string)
	c.call("POST", "/contacts", map[string]any{"contacts": []any{
		map[string]any{"Email": "a@example.com", "FirstName": "A", "custom": map[string]any{"string--Tier": "gold"}, "_autopilot_list": listID},
		map[string]any{"Email": "b@example.com", "LastName": "B"},
	}}, http.StatusOK)
	c.call("POST", "/contact/b@example.com/unsubscribe", nil, http.StatusOK)
	c.call("POST", "/trigger/0001/contact/a@example.com", nil, http.StatusOK)

	raw, err := first.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	var saved sim.State
	if err := json.Unmarshal(raw, &saved); err != nil {
		t.Fatal(err)
	}
	second, c2 := start(t, sim.Options{})
	if err := second.Load(saved); err != nil {
		t.Fatal(err)
	}
	if got, want := second.Dump(), first.Dump(); !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded state differs:\n got %+v\nwant %+v", got, want)
	}

	// Upserts keep unsubscribed contacts unsubscribed and get fresh ids.
	c2.call("POST", "/contact", map[string]any{"contact": map[string]any{"Email": "b@example.com", "FirstName": "Again"}}, http.StatusOK)
	id := c2.call("POST", "/contact", map[string]any{"contact": map[string]any{"Email": "c@example.com"}}, http.StatusOK)["contact_id"].(string)
	for _, ct := range first.Dump().Contacts {
		if ct.ContactID == id {
			t.Fatalf("new contact reuses id %s", id)
		}
	}
	newList := c2.call("POST", "/list", map[string]any{"name": "Other"}, http.StatusOK)["list_id"].(string)
	if newList == listID {
		t.Fatalf("new list reuses id %s", newList)
	}
	st := second.Dump()
	for _, ct := range st.Contacts {
		if ct.Email == "b@example.com" && !ct.Unsubscribed {
			t.Fatal("b@example.com was re-subscribed after the load")
		}
	}
	if len(st.Contacts) != 3 {
		t.Fatalf("%d contacts, want 3", len(st.Contacts))
	}
}

func TestLoadRefusesBrokenState(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		st   sim.State
		want string
	}{
		{"foreign id", sim.State{Contacts: []sim.Contact{{ContactID: "42", Email: "a@example.com"}}}, "not a simulator id"},
		{"unknown list", sim.State{Contacts: []sim.Contact{{ContactID: "person_0000000000000001", Email: "a@example.com", Lists: []string{"contactlist_0000000000000009"}}}}, "not in the state"},
		{"same email twice", sim.State{Contacts: []sim.Contact{
			{ContactID: "person_0000000000000001", Email: "a@example.com"},
			{ContactID: "person_0000000000000002", Email: "A@example.com"},
		}}, "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := sim.New(sim.Options{})
			if err := s.Load(tt.st); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
