package sim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/segpilot/segpilot/shared/ortto/fieldid"
	"github.com/segpilot/segpilot/shared/simkit"
)

type person struct {
	id            string
	email         string
	fields        map[string]any
	tags          map[string]bool
	subscribed    bool
	smsSubscribed bool
}

// store is the simulator's data; the Server's mutex guards it.
type store struct {
	next       int
	byEmail    map[string]*person // lower-case email
	fields     map[string]Field   // by id
	suppressed map[string]bool    // lower-case email
}

func newStore() *store {
	return &store{byEmail: map[string]*person{}, fields: map[string]Field{}, suppressed: map[string]bool{}}
}

// create adds a person with Ortto's defaults: subscribed to email, not to
// SMS.
func (st *store) create(email string) *person {
	st.next++
	p := &person{id: fmt.Sprintf("0064%020x", st.next), email: email, fields: map[string]any{}, tags: map[string]bool{}, subscribed: true}
	st.byEmail[simkit.EmailKey(email)] = p
	return p
}

// maxFields is Ortto's limit of custom person fields per account.
const maxFields = 100

// displayTypes maps custom-field/create's type to the id's prefix.
var displayTypes = map[string]string{
	"text": "str", "long_text": "txt", "integer": "int", "decimal": "int", "currency": "int", "boolean": "bol", "date": "dtz",
}

func (st *store) createField(name, typ string) (Field, error) {
	prefix, ok := displayTypes[typ]
	switch {
	case !ok:
		return Field{}, fmt.Errorf("type %q is not one of text, long_text, integer, decimal, currency, boolean, date", typ)
	case fieldid.Kebab(name) == "":
		return Field{}, errors.New("name must hold letters or digits")
	case len(st.fields) >= maxFields:
		return Field{}, fmt.Errorf("the account already has %d custom fields, the most it may", maxFields)
	}
	for _, f := range st.fields {
		if _, existing, _ := strings.Cut(f.ID, ":cm:"); strings.EqualFold(f.Name, name) || existing == fieldid.Kebab(name) {
			return Field{}, fmt.Errorf("a custom field named %q exists (%s)", f.Name, f.ID)
		}
	}
	if typ == "boolean" {
		typ = "bool"
	}
	f := Field{ID: prefix + ":cm:" + fieldid.Kebab(name), Name: name, DisplayType: typ}
	st.fields[f.ID] = f
	return f, nil
}

func (st *store) dump() State {
	out := State{People: []Person{}, Fields: []Field{}}
	for _, p := range st.byEmail {
		out.People = append(out.People, Person{ID: p.id, Email: p.email, Fields: cloneFields(p.fields),
			Tags: slices.Sorted(maps.Keys(p.tags)), Subscribed: p.subscribed, SMSSubscribed: p.smsSubscribed})
	}
	slices.SortFunc(out.People, func(a, b Person) int { return strings.Compare(strings.ToLower(a.Email), strings.ToLower(b.Email)) })
	for _, id := range slices.Sorted(maps.Keys(st.fields)) {
		out.Fields = append(out.Fields, st.fields[id])
	}
	out.Suppressed = slices.Sorted(maps.Keys(st.suppressed))
	return out
}

func cloneFields(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if obj, ok := v.(map[string]any); ok {
			v = maps.Clone(obj)
		}
		out[k] = v
	}
	return out
}

func load(s State) (*store, error) {
	st := newStore()
	for _, f := range s.Fields {
		if _, ok := st.fields[f.ID]; ok {
			return nil, fmt.Errorf("custom field %s twice", f.ID)
		}
		st.fields[f.ID] = f
	}
	for _, p := range s.People {
		key := simkit.EmailKey(p.Email)
		if _, ok := st.byEmail[key]; ok || key == "" {
			return nil, fmt.Errorf("person %q is missing or given twice", p.ID)
		}
		var n int
		if _, err := fmt.Sscanf(p.ID, "0064%x", &n); err != nil {
			return nil, fmt.Errorf("person id %q was not made by the simulator", p.ID)
		}
		st.next = max(st.next, n)
		tags := map[string]bool{}
		for _, t := range p.Tags {
			tags[t] = true
		}
		st.byEmail[key] = &person{id: p.ID, email: p.Email, fields: cloneFields(p.Fields), tags: tags,
			subscribed: p.Subscribed, smsSubscribed: p.SMSSubscribed}
	}
	for _, e := range s.Suppressed {
		st.suppressed[simkit.EmailKey(e)] = true
	}
	return st, nil
}
