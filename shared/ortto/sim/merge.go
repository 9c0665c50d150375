package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/segpilot/segpilot/shared/simkit"
)

// maxPeople is Ortto's limit of people per merge.
const maxPeople = 100

type mergeRequest struct {
	People                 []personIn `json:"people"`
	MergeBy                []string   `json:"merge_by"`
	MergeStrategy          *int       `json:"merge_strategy"`
	FindStrategy           int        `json:"find_strategy"`
	Async                  bool       `json:"async"`
	SkipNonExisting        bool       `json:"skip_non_existing"`
	SuppressionListFieldID string     `json:"suppression_list_field_id"`
}

type personIn struct {
	Fields    map[string]any `json:"fields"` // numbers as json.Number
	Tags      []string       `json:"tags"`
	UnsetTags []string       `json:"unset_tags"`
}

// entry is one person's answer.
type entry struct {
	PersonID string `json:"person_id,omitempty"`
	Status   string `json:"status"`
	Error    string `json:"error,omitempty"`
}

// builtIn are the built-in fields the simulator keeps, by type.
var builtIn = map[string]bool{
	"str::email": true, "str::first": true, "str::last": true, "str::postal": true, "str::ei": true,
	"str::language": true, "bol::p": true, "bol::sp": true, "bol::gdpr": true,
}

func (s *Server) merge(body []byte) simkit.Answer {
	var req mergeRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	strategy := 2
	if req.MergeStrategy != nil {
		strategy = *req.MergeStrategy
	}
	switch n := len(req.People); {
	case n == 0 || n > maxPeople:
		return badRequest("people must hold 1 to %d people; got %d", maxPeople, n)
	case req.Async:
		return badRequest(`the simulator answers synchronous merges only ("async": false)`)
	case !slices.Equal(req.MergeBy, []string{"str::email"}):
		return badRequest(`the simulator merges by ["str::email"] only; got %q`, req.MergeBy)
	case strategy < 1 || strategy > 3:
		return badRequest("merge_strategy must be 1, 2 or 3; got %d", strategy)
	}
	people := req.People
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range people {
		if people[i].Fields == nil {
			return badRequest("people[%d] must be an object with fields", i)
		}
		if e := s.st.check(i, people[i]); e != "" {
			return badRequest("%s", e)
		}
	}
	a := simkit.OK(nil)
	entries := make([]entry, len(people))
	rejected := 0
	for i, p := range people {
		email, _ := p.Fields["str::email"].(string) // checked: a string or null
		exists := s.st.byEmail[simkit.EmailKey(email)] != nil
		switch {
		case !strings.Contains(email, "@"):
			entries[i] = entry{Status: "error", Error: "str::email must hold an email address"}
			continue
		case !exists && !req.SkipNonExisting && s.kit.Rejects(email):
			// reject= refuses to create the person: the address never
			// gets into Ortto.
			entries[i] = entry{Status: "error", Error: "invalid email address"}
			rejected++
			continue
		}
		entries[i] = s.st.apply(email, p, strategy, req.SkipNonExisting, req.SuppressionListFieldID == "str::email")
		if entries[i].Status == "created" || entries[i].Status == "merged" {
			a.Upserted = append(a.Upserted, email)
		}
	}
	if rejected > 0 {
		s.kit.AddRejected(rejected)
	}
	a.Body = map[string]any{"people": entries}
	return a
}

// check refuses what Ortto refuses for the whole call: unknown fields,
// values of the wrong type, a tag both set and unset. st must be locked.
func (st *store) check(i int, p personIn) string {
	for _, key := range slices.Sorted(maps.Keys(p.Fields)) {
		_, custom := st.fields[key]
		if !builtIn[key] && !custom {
			return fmt.Sprintf("people[%d]: unknown field %q (custom fields must exist before values are merged into them)", i, key)
		}
		if why := typeProblem(key[:3], p.Fields[key]); why != "" {
			return fmt.Sprintf("people[%d]: field %q %s", i, key, why)
		}
	}
	for _, t := range p.Tags {
		if slices.Contains(p.UnsetTags, t) {
			return fmt.Sprintf("people[%d]: tag %q is both in tags and unset_tags", i, t)
		}
	}
	return ""
}

// typeProblem says why v cannot go into a field of type typ; null clears
// any field.
func typeProblem(typ string, v any) string {
	if v == nil {
		return ""
	}
	switch typ {
	case "str", "txt":
		if _, ok := v.(string); !ok {
			return "must be a string"
		}
	case "int":
		if n, ok := v.(json.Number); !ok || !isInt(n) {
			return "must be a whole number (decimals are sent × 1000)"
		}
	case "bol":
		if _, ok := v.(bool); !ok {
			return "must be true or false"
		}
	case "dtz":
		d, ok := v.(map[string]any)
		if !ok || !inRange(d["year"], 1, 9999) || !inRange(d["month"], 1, 12) || !inRange(d["day"], 1, 31) {
			return "must be a date object {year, month, day, timezone}"
		}
		if _, ok := d["timezone"].(string); !ok {
			return "must be a date object {year, month, day, timezone}"
		}
	}
	return ""
}

func isInt(n json.Number) bool {
	_, err := n.Int64()
	return err == nil
}

func inRange(v any, lo, hi int64) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	i, err := n.Int64()
	return err == nil && i >= lo && i <= hi
}

// apply merges one checked person. st must be locked.
func (st *store) apply(email string, in personIn, strategy int, skipNew, suppression bool) entry {
	p := st.byEmail[simkit.EmailKey(email)]
	switch {
	case p == nil && skipNew:
		return entry{Status: "ignored"}
	case p == nil && suppression && st.suppressed[simkit.EmailKey(email)]:
		return entry{Status: "suppressed", Error: "Email is suppressed"}
	case p == nil:
		p = st.create(email)
		st.set(p, in, 2)
		return entry{PersonID: p.id, Status: "created"}
	case strategy == 3:
		return entry{PersonID: p.id, Status: "ignored"}
	}
	st.set(p, in, strategy)
	return entry{PersonID: p.id, Status: "merged"}
}

// set writes in's fields and tags into p: strategy 1 fills empty fields
// only, 2 overwrites (null clears).
func (st *store) set(p *person, in personIn, strategy int) {
	for key, v := range in.Fields {
		switch key {
		case "str::email":
			continue
		case "bol::p":
			if b, ok := v.(bool); ok {
				p.subscribed = b // true re-subscribes, as Ortto does
			}
			continue
		case "bol::sp":
			if b, ok := v.(bool); ok {
				p.smsSubscribed = b
			}
			continue
		}
		_, has := p.fields[key]
		switch {
		case strategy == 1 && has:
		case v == nil:
			delete(p.fields, key)
		default:
			p.fields[key] = plain(v)
		}
	}
	for _, t := range in.Tags {
		p.tags[t] = true
	}
	for _, t := range in.UnsetTags {
		delete(p.tags, t)
	}
}

// plain turns json.Number into int64 (int fields hold whole numbers), in
// date objects too, so a Dump compares with Go values.
func plain(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		return x.String()
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plain(e)
		}
		return out
	}
	return v
}

func (s *Server) fields(_ []byte) simkit.Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	type item struct {
		Field struct {
			Field
			LiquidName string `json:"liquid_name"`
		} `json:"field"`
		TrackedValue bool `json:"tracked_value"`
	}
	out := []item{}
	for _, id := range slices.Sorted(maps.Keys(s.st.fields)) {
		var it item
		it.Field.Field = s.st.fields[id]
		_, name, _ := strings.Cut(id, ":cm:")
		it.Field.LiquidName = "people.custom." + name
		out = append(out, it)
	}
	return simkit.OK(map[string]any{"fields": out})
}

func (s *Server) createField(body []byte) simkit.Answer {
	var req struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.st.createField(req.Name, req.Type)
	if err != nil {
		return errorAnswer(http.StatusBadRequest, "bad-request", err.Error())
	}
	return simkit.OK(map[string]any{"field": f})
}
