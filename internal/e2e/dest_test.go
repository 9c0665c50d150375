package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	autopilotsim "github.com/segpilot/segpilot/shared/autopilot/sim"
	orttosim "github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/simkit"
)

// destination is one kind the end-to-end suites run against: the config
// that sends to it, its simulator, and how to read what the simulator
// holds. Every suite runs once per destination (forEachDestination).
type destination struct {
	kind string
	// connection and custom are the config's lines for it.
	connection string
	custom     map[string]string // source column -> field key
	newSim     func(simOptions) simulator
	// upsertRoute and removeRoute are the simulator's Counters routes.
	upsertRoute, removeRoute string
	// rejectedBy prefixes a reason in rejected.csv.
	rejectedBy string
}

// simOptions configure a simulator whatever its kind.
type simOptions struct {
	RequestsPerSecond float64
	Burst             int
	Faults            simkit.Faults
	Seed              int64
}

// simulator is what the suites use of a destination's simulator.
type simulator interface {
	http.Handler
	Counters() simkit.Counters
	ResetCounters()
	Upserted() map[string]int
	// holds is what the destination holds, by lower-case email.
	holds() map[string]held
	// members are the lower-case emails on the export's list (Autopilot's
	// list, Ortto's tag), sorted.
	members() []string
	// membersOf is members of another list (tag).
	membersOf(title string) []string
	// optOut unsubscribes someone, as if they clicked the link.
	optOut(email string) error
	// addOutsider puts someone on the list by hand in the destination.
	addOutsider(email string) error
	// madeOnce says whether what runs create in the destination was
	// created once: Autopilot's list, Ortto's custom fields.
	madeOnce() error
	// seed makes a contact that is on no list (Ortto: has no tag), named
	// first, as if made by another tool.
	seed(email, first string) error
	// forget deletes a contact from the destination, as a person can.
	forget(email string) error
}

// held is one contact as the destination holds it.
type held struct {
	first, last, tier string
	orders            float64
	subscribed        bool
}

var destinations = []destination{
	{
		kind: "autopilot",
		connection: `  autopilot-main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    baseURL: https://api2.autopilothq.com/v1
`,
		custom: map[string]string{"LoyaltyTier": "string--Loyalty--Tier", "LifetimeOrders": "integer--Lifetime--Orders"},
		newSim: func(o simOptions) simulator {
			return autopilotSim{autopilotsim.New(autopilotsim.Options{APIKey: apiKey, RequestsPerSecond: o.RequestsPerSecond,
				Burst: o.Burst, RetryAfter: true, Faults: o.Faults, Seed: o.Seed})}
		},
		upsertRoute: "POST /contacts", removeRoute: "DELETE /list/{list}/contact/{contact}",
		rejectedBy: "rejected by Autopilot",
	},
	{
		kind: "ortto",
		connection: `  ortto-main:
    kind: ortto
    region: global
    apiKeySecret: segpilot/ortto
`,
		custom: map[string]string{"LoyaltyTier": "str:cm:loyalty-tier", "LifetimeOrders": "int:cm:lifetime-orders"},
		newSim: func(o simOptions) simulator {
			return orttoSim{orttosim.New(orttosim.Options{APIKey: apiKey, RequestsPerSecond: o.RequestsPerSecond,
				Burst: o.Burst, Faults: o.Faults, Seed: o.Seed})}
		},
		upsertRoute: "POST /person/merge", removeRoute: "POST /person/merge",
		rejectedBy: "rejected by Ortto",
	},
}

// forEachDestination runs f as a parallel subtest per destination.
func forEachDestination(t *testing.T, f func(t *testing.T, d destination)) {
	t.Helper()
	for _, d := range destinations {
		t.Run(d.kind, func(t *testing.T) {
			t.Parallel()
			f(t, d)
		})
	}
}

type autopilotSim struct{ *autopilotsim.Server }

func (s autopilotSim) holds() map[string]held {
	out := map[string]held{}
	for _, c := range s.Dump().Contacts {
		h := held{subscribed: !c.Unsubscribed}
		h.first, _ = c.Fields["FirstName"].(string)
		h.last, _ = c.Fields["LastName"].(string)
		h.tier, _ = c.Custom["string--Loyalty--Tier"].(string)
		h.orders, _ = c.Custom["integer--Lifetime--Orders"].(float64)
		out[strings.ToLower(c.Email)] = h
	}
	return out
}

func (s autopilotSim) members() []string { return s.membersOf(listTitle) }

func (s autopilotSim) membersOf(title string) []string {
	var out []string
	for _, l := range s.Dump().Lists {
		if l.Title == title {
			for _, m := range l.Members {
				out = append(out, strings.ToLower(m))
			}
		}
	}
	slices.Sort(out)
	return out
}

func (s autopilotSim) optOut(email string) error { return s.Unsubscribe(email) }

func (s autopilotSim) addOutsider(email string) error {
	for _, l := range s.Dump().Lists {
		if l.Title == listTitle {
			return s.AddToList(l.ID, email)
		}
	}
	return s.AddToList(s.CreateList(listTitle), email)
}

func (s autopilotSim) seed(email, first string) error {
	st := s.Dump()
	st.Contacts = append(st.Contacts, autopilotsim.Contact{ContactID: fmt.Sprintf("person_%016x", 900000+len(st.Contacts)),
		Email: email, Fields: map[string]any{"FirstName": first}, Lists: []string{}})
	return s.Load(st)
}

func (s autopilotSim) forget(email string) error {
	st := s.Dump()
	st.Contacts = slices.DeleteFunc(st.Contacts, func(c autopilotsim.Contact) bool { return strings.EqualFold(c.Email, email) })
	for i := range st.Lists {
		st.Lists[i].Members = slices.DeleteFunc(st.Lists[i].Members, func(m string) bool { return strings.EqualFold(m, email) })
	}
	return s.Load(st)
}

func (s autopilotSim) madeOnce() error {
	var ids []string
	for _, l := range s.Dump().Lists {
		if l.Title == listTitle {
			ids = append(ids, l.ID)
		}
	}
	if len(ids) != 1 {
		return fmt.Errorf("%d lists titled %q: %v", len(ids), listTitle, ids)
	}
	return nil
}

type orttoSim struct{ *orttosim.Server }

func (s orttoSim) madeOnce() error {
	if n := s.Counters().ByRoute["POST /person/custom-field/create"][200]; n != 2 {
		return fmt.Errorf("%d custom fields created, want the export's 2, once each", n)
	}
	return nil
}

func (s orttoSim) holds() map[string]held {
	out := map[string]held{}
	for _, p := range s.Dump().People {
		h := held{subscribed: p.Subscribed}
		h.first, _ = p.Fields["str::first"].(string)
		h.last, _ = p.Fields["str::last"].(string)
		h.tier, _ = p.Fields["str:cm:loyalty-tier"].(string)
		if n, ok := p.Fields["int:cm:lifetime-orders"].(int64); ok {
			h.orders = float64(n)
		}
		out[strings.ToLower(p.Email)] = h
	}
	return out
}

func (s orttoSim) members() []string { return s.membersOf(listTitle) }

func (s orttoSim) membersOf(title string) []string {
	var out []string
	for _, e := range s.Dump().Tagged(title) {
		out = append(out, strings.ToLower(e))
	}
	slices.Sort(out)
	return out
}

func (s orttoSim) optOut(email string) error { return s.Unsubscribe(email) }

func (s orttoSim) seed(email, first string) error {
	st := s.Dump()
	st.People = append(st.People, orttosim.Person{ID: fmt.Sprintf("0064%x", 900000+len(st.People)), Email: email,
		Fields: map[string]any{"str::first": first}, Tags: []string{}, Subscribed: true})
	return s.Load(st)
}

func (s orttoSim) forget(email string) error {
	st := s.Dump()
	st.People = slices.DeleteFunc(st.People, func(p orttosim.Person) bool { return strings.EqualFold(p.Email, email) })
	return s.Load(st)
}

func (s orttoSim) addOutsider(email string) error {
	s.Tag(email, listTitle)
	return nil
}
