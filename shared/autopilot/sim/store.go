package sim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ErrNotFound is returned (wrapped) by the test helpers when a contact or
// list does not exist.
var ErrNotFound = errors.New("not found")

// State is a deep copy of everything the simulator holds, in a
// deterministic order so tests can compare it whole.
type State struct {
	Contacts       []Contact      `json:"contacts"`      // sorted by email
	Lists          []List         `json:"lists"`         // sorted by title then id
	CustomFields   []CustomField  `json:"custom_fields"` // sorted by name
	TriggerEntries []TriggerEntry `json:"trigger_entries,omitempty"`
}

// Contact is one stored contact. JSON numbers sent by clients are held as
// float64, as encoding/json decodes them.
type Contact struct {
	ContactID    string         `json:"contact_id"`
	Email        string         `json:"Email"`
	Fields       map[string]any `json:"fields"`           // standard fields other than Email
	Custom       map[string]any `json:"custom,omitempty"` // "string--Loyalty--Tier": "gold"
	Unsubscribed bool           `json:"unsubscribed"`
	Lists        []string       `json:"lists"` // list ids, sorted
}

// List is one contact list.
type List struct {
	ID      string   `json:"list_id"`
	Title   string   `json:"title"`
	Members []string `json:"members"` // member emails, sorted
}

// CustomField is a custom field seen in an upsert; its type comes from the
// key's prefix and is fixed by the first upsert that used the name.
type CustomField struct {
	Name      string `json:"name"`
	FieldType string `json:"fieldType"`
}

// TriggerEntry records a contact put into a journey through its API trigger.
type TriggerEntry struct {
	TriggerID string `json:"trigger_id"`
	ContactID string `json:"contact_id"`
	Email     string `json:"Email"`
}

type trigger struct {
	ID      string `json:"trigger_id"`
	Journey string `json:"journey"`
}

// triggers is the simulator's fixed journey set.
var triggers = []trigger{
	{ID: "0001", Journey: "Welcome new customers"},
	{ID: "0002", Journey: "VIP onboarding"},
	{ID: "0003", Journey: "Win back lapsed customers"},
}

func findTrigger(id string) bool {
	return slices.ContainsFunc(triggers, func(t trigger) bool { return t.ID == id })
}

type contact struct {
	id           string
	email        string // as first given
	fields       map[string]any
	custom       map[string]any
	unsubscribed bool
	lists        map[string]bool
}

type list struct {
	id      string
	title   string
	members map[string]bool // contact ids
}

// store is the simulator's data; the Server's mutex guards it.
type store struct {
	nextContact, nextList int
	contacts              map[string]*contact // by id
	order                 []string            // contact ids, ascending (ids grow with the counter)
	byEmail               map[string]string   // lower-case email -> id
	lists                 map[string]*list
	customFields          map[string]string // display name -> type
	entries               []TriggerEntry
}

func newStore() *store {
	return &store{
		contacts:     map[string]*contact{},
		byEmail:      map[string]string{},
		lists:        map[string]*list{},
		customFields: map[string]string{},
	}
}

func emailKey(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// lookup finds a contact by id or, failing that, by email.
func (st *store) lookup(idOrEmail string) *contact {
	if c, ok := st.contacts[idOrEmail]; ok {
		return c
	}
	if id, ok := st.byEmail[emailKey(idOrEmail)]; ok {
		return st.contacts[id]
	}
	return nil
}

func (st *store) create(email string) *contact {
	st.nextContact++
	// Fixed-width hex keeps string order equal to creation order, which
	// paging relies on.
	c := &contact{
		id:     fmt.Sprintf("person_%016x", st.nextContact),
		email:  strings.TrimSpace(email),
		fields: map[string]any{},
		custom: map[string]any{},
		lists:  map[string]bool{},
	}
	st.contacts[c.id] = c
	st.order = append(st.order, c.id)
	st.byEmail[emailKey(email)] = c.id
	return c
}

func (st *store) createList(title string) string {
	st.nextList++
	l := &list{id: fmt.Sprintf("contactlist_%016x", st.nextList), title: title, members: map[string]bool{}}
	st.lists[l.id] = l
	return l.id
}

func (st *store) deleteList(id string) {
	for cid := range st.lists[id].members {
		delete(st.contacts[cid].lists, id)
	}
	delete(st.lists, id)
}

func (st *store) addMember(l *list, c *contact) {
	l.members[c.id] = true
	c.lists[l.id] = true
}

func (st *store) removeMember(l *list, c *contact) {
	delete(l.members, c.id)
	delete(c.lists, l.id)
}

func (st *store) delete(c *contact) {
	for id := range c.lists {
		delete(st.lists[id].members, c.id)
	}
	delete(st.contacts, c.id)
	delete(st.byEmail, emailKey(c.email))
	if i, ok := slices.BinarySearch(st.order, c.id); ok {
		st.order = slices.Delete(st.order, i, i+1)
	}
}

// apply performs one validated upsert and returns the contact id.
func (st *store) apply(u upsert) string {
	var c *contact
	if id, ok := st.byEmail[emailKey(u.email)]; ok {
		c = st.contacts[id]
	} else {
		c = st.create(u.email)
	}
	for k, v := range u.fields {
		if v == nil {
			delete(c.fields, k)
		} else {
			c.fields[k] = v
		}
	}
	for k, v := range u.custom {
		if v == nil {
			delete(c.custom, k)
			continue
		}
		c.custom[k] = v
		typ, name := splitCustomKey(k)
		if _, ok := st.customFields[name]; !ok {
			st.customFields[name] = typ
		}
	}
	// Autopilot applies the key both ways: false re-subscribes, which is
	// how an end-to-end test catches a client that sends it.
	if u.unsubscribed != nil {
		c.unsubscribed = *u.unsubscribed
	}
	if u.newEmail != "" {
		delete(st.byEmail, emailKey(c.email))
		c.email = strings.TrimSpace(u.newEmail)
		st.byEmail[emailKey(c.email)] = c.id
	}
	if u.listID != "" {
		st.addMember(st.lists[u.listID], c)
	}
	return c.id
}

// page returns up to pageSize ids from ids (ascending) after bookmark, and
// the bookmark for the next page ("" on the last page).
func page(ids []string, bookmark string) ([]string, string) {
	start := 0
	if bookmark != "" {
		start = sort.SearchStrings(ids, bookmark)
		if start < len(ids) && ids[start] == bookmark {
			start++
		}
	}
	end := min(start+pageSize, len(ids))
	out := ids[start:end]
	if end < len(ids) {
		return out, out[len(out)-1]
	}
	return out, ""
}

const pageSize = 100

// document renders a contact the way GET /contact answers it: standard
// fields flattened at the top level, like the real API.
func (st *store) document(c *contact) map[string]any {
	doc := make(map[string]any, len(c.fields)+6)
	for k, v := range c.fields {
		doc[k] = deepCopy(v)
	}
	doc["contact_id"] = c.id
	doc["Email"] = c.email
	doc["unsubscribed"] = c.unsubscribed
	doc["lists"] = sortedKeys(c.lists)
	custom := map[string]any{}
	customFields := []map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(c.custom)) {
		custom[k] = deepCopy(c.custom[k])
		typ, _ := splitCustomKey(k)
		customFields = append(customFields, map[string]any{"kind": k, "value": deepCopy(c.custom[k]), "fieldType": typ})
	}
	doc["custom"] = custom
	doc["custom_fields"] = customFields
	return doc
}

func (st *store) dump() State {
	s := State{Contacts: []Contact{}, Lists: []List{}, CustomFields: []CustomField{}}
	for _, c := range st.contacts {
		dc := Contact{
			ContactID:    c.id,
			Email:        c.email,
			Fields:       deepCopy(c.fields).(map[string]any),
			Unsubscribed: c.unsubscribed,
			Lists:        sortedKeys(c.lists),
		}
		if len(c.custom) > 0 {
			dc.Custom = deepCopy(c.custom).(map[string]any)
		}
		s.Contacts = append(s.Contacts, dc)
	}
	slices.SortFunc(s.Contacts, func(a, b Contact) int {
		if c := strings.Compare(emailKey(a.Email), emailKey(b.Email)); c != 0 {
			return c
		}
		return strings.Compare(a.ContactID, b.ContactID)
	})
	for _, l := range st.lists {
		members := make([]string, 0, len(l.members))
		for id := range l.members {
			members = append(members, st.contacts[id].email)
		}
		slices.Sort(members)
		s.Lists = append(s.Lists, List{ID: l.id, Title: l.title, Members: members})
	}
	slices.SortFunc(s.Lists, func(a, b List) int {
		if c := strings.Compare(a.Title, b.Title); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	s.CustomFields = st.customFieldList()
	s.TriggerEntries = slices.Clone(st.entries)
	return s
}

func (st *store) customFieldList() []CustomField {
	out := make([]CustomField, 0, len(st.customFields))
	for _, name := range slices.Sorted(maps.Keys(st.customFields)) {
		out = append(out, CustomField{Name: name, FieldType: st.customFields[name]})
	}
	return out
}

// sortedKeys never returns nil, so JSON shows [] rather than null.
func sortedKeys(m map[string]bool) []string {
	keys := slices.AppendSeq(make([]string, 0, len(m)), maps.Keys(m))
	slices.Sort(keys)
	return keys
}

// deepCopy copies the values encoding/json produces.
func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}

// load rebuilds a store from a dump, so a simulator can carry its state
// from one process to the next (the demo keeps Autopilot between runs).
func load(s State) (*store, error) {
	st := newStore()
	for _, l := range s.Lists {
		n, err := idNumber(l.ID, "contactlist_")
		if err != nil {
			return nil, err
		}
		if _, dup := st.lists[l.ID]; dup {
			return nil, fmt.Errorf("list %s appears twice", l.ID)
		}
		st.lists[l.ID] = &list{id: l.ID, title: l.Title, members: map[string]bool{}}
		st.nextList = max(st.nextList, n)
	}
	for _, dc := range s.Contacts {
		n, err := idNumber(dc.ContactID, "person_")
		if err != nil {
			return nil, err
		}
		if _, dup := st.contacts[dc.ContactID]; dup || st.byEmail[emailKey(dc.Email)] != "" {
			return nil, fmt.Errorf("contact %s appears twice", dc.ContactID)
		}
		c := &contact{id: dc.ContactID, email: dc.Email, fields: map[string]any{}, custom: map[string]any{},
			unsubscribed: dc.Unsubscribed, lists: map[string]bool{}}
		if dc.Fields != nil {
			c.fields = deepCopy(dc.Fields).(map[string]any)
		}
		if dc.Custom != nil {
			c.custom = deepCopy(dc.Custom).(map[string]any)
		}
		st.contacts[c.id] = c
		st.byEmail[emailKey(c.email)] = c.id
		st.order = append(st.order, c.id)
		st.nextContact = max(st.nextContact, n)
		for _, id := range dc.Lists {
			l := st.lists[id]
			if l == nil {
				return nil, fmt.Errorf("contact %s is on list %s, which is not in the state", c.id, id)
			}
			st.addMember(l, c)
		}
	}
	slices.Sort(st.order)
	for _, f := range s.CustomFields {
		st.customFields[f.Name] = f.FieldType
	}
	st.entries = slices.Clone(s.TriggerEntries)
	return st, nil
}

// idNumber parses the counter out of "person_000000000000002a".
func idNumber(id, prefix string) (int, error) {
	hexPart, ok := strings.CutPrefix(id, prefix)
	n, err := strconv.ParseUint(hexPart, 16, 31)
	if !ok || err != nil || len(hexPart) != 16 {
		return 0, fmt.Errorf("id %q is not a simulator id (%s + 16 hex digits)", id, prefix)
	}
	return int(n), nil
}
