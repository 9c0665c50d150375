package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

type handler func(s *Server, r *http.Request, p map[string]string) answer

type route struct {
	method  string
	pattern []string // literal segments, or "{name}" wildcards
	name    string   // "GET /contact/{contact}", the Counters key
	handle  handler
}

func newRoute(method, pattern string, h handler) route {
	return route{method: method, pattern: strings.Split(strings.Trim(pattern, "/"), "/"), name: method + " " + pattern, handle: h}
}

// routes are tried in order, so literal segments come before a wildcard in
// the same place (custom_fields before {bookmark}).
var routes = []route{
	newRoute("GET", "/account", (*Server).account),
	newRoute("POST", "/contact", (*Server).upsertOne),
	newRoute("POST", "/contacts", (*Server).upsertBulk),
	newRoute("GET", "/contacts", (*Server).listContacts),
	newRoute("GET", "/contacts/custom_fields", (*Server).customFields),
	newRoute("GET", "/contacts/{bookmark}", (*Server).listContacts),
	newRoute("GET", "/contact/{contact}", (*Server).getContact),
	newRoute("DELETE", "/contact/{contact}", (*Server).deleteContact),
	newRoute("POST", "/contact/{contact}/unsubscribe", (*Server).unsubscribe),
	newRoute("GET", "/lists", (*Server).lists),
	newRoute("POST", "/list", (*Server).createList),
	newRoute("GET", "/list/{list}/contacts", (*Server).listMembers),
	newRoute("GET", "/list/{list}/contacts/{bookmark}", (*Server).listMembers),
	newRoute("GET", "/list/{list}/contact/{contact}", (*Server).isMember),
	newRoute("POST", "/list/{list}/contact/{contact}", (*Server).addMember),
	newRoute("DELETE", "/list/{list}/contact/{contact}", (*Server).removeMember),
	newRoute("GET", "/triggers", (*Server).triggers),
	newRoute("POST", "/trigger/{trigger}/contact/{contact}", (*Server).trigger),
}

// match finds the route for r. When the path is known but the method is
// not, it returns the path pattern in allowed.
func match(req *http.Request) (rt *route, params map[string]string, allowed string) {
	segs := segments(req.URL)
	if len(segs) == 0 || segs[0] != "v1" {
		return nil, nil, ""
	}
	segs = segs[1:]
	for i := range routes {
		p, ok := matchPattern(routes[i].pattern, segs)
		if !ok {
			continue
		}
		if routes[i].method == req.Method {
			return &routes[i], p, ""
		}
		if allowed == "" {
			allowed = "/" + strings.Join(routes[i].pattern, "/")
		}
	}
	return nil, nil, allowed
}

// underAPIPath: every route is under /v1/ (a 404 elsewhere says so).
func underAPIPath(u *url.URL) bool {
	segs := segments(u)
	return len(segs) > 0 && segs[0] == "v1"
}

// segments splits the path, dropping empty segments so "//v1/" and
// "/v1//contacts" (clients joining URLs) route like the clean path.
func segments(u *url.URL) []string {
	var out []string
	for _, seg := range strings.Split(u.EscapedPath(), "/") {
		if seg == "" {
			continue
		}
		if dec, err := url.PathUnescape(seg); err == nil {
			seg = dec
		}
		out = append(out, seg)
	}
	return out
}

func matchPattern(pattern, segs []string) (map[string]string, bool) {
	if len(pattern) != len(segs) {
		return nil, false
	}
	p := map[string]string{}
	for i, lit := range pattern {
		if strings.HasPrefix(lit, "{") {
			p[strings.Trim(lit, "{}")] = segs[i]
		} else if lit != segs[i] {
			return nil, false
		}
	}
	return p, true
}

// maxBody bounds a request body; 100 rich contacts fit many times over.
const maxBody = 8 << 20

func decode(r *http.Request, v any) *apiError {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return &apiError{status: http.StatusBadRequest, code: "bad request", msg: fmt.Sprintf("reading body: %v", err)}
	}
	if len(body) > maxBody {
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "request too large", msg: fmt.Sprintf("body exceeds %d bytes", maxBody)}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &apiError{status: http.StatusBadRequest, code: "malformed JSON", msg: fmt.Sprintf("malformed JSON body: %v", err)}
	}
	return nil
}

func (s *Server) account(_ *http.Request, _ map[string]string) answer {
	return ok(map[string]any{
		"instanceId":       "segpilot-simulator",
		"organizationName": "segpilot simulator",
		"licensedContacts": 1000000,
	})
}

func (s *Server) upsertOne(r *http.Request, _ map[string]string) answer {
	var req struct {
		Contact json.RawMessage `json:"contact"`
	}
	if e := decode(r, &req); e != nil {
		return errAnswer(e)
	}
	if len(req.Contact) == 0 || string(req.Contact) == "null" {
		return errorf(http.StatusBadRequest, "bad request", `body must be {"contact": {...}}`)
	}
	u, err := parseContact(req.Contact, 0)
	if err != nil {
		return errorf(http.StatusBadRequest, "bad request", "%v", err)
	}
	ids, e := s.applyUpserts([]upsert{u})
	if e != nil {
		return errAnswer(e)
	}
	a := ok(map[string]string{"contact_id": ids[0]})
	a.upserted = []string{u.email}
	return a
}

func (s *Server) upsertBulk(r *http.Request, _ map[string]string) answer {
	var req struct {
		Contacts []json.RawMessage `json:"contacts"`
	}
	if e := decode(r, &req); e != nil {
		return errAnswer(e)
	}
	switch n := len(req.Contacts); {
	case n == 0:
		return errorf(http.StatusBadRequest, "bad request", `body must be {"contacts": [...]} with 1 to %d contacts`, maxBulk)
	case n > maxBulk:
		return errorf(http.StatusBadRequest, "too many contacts", "%d contacts sent; at most %d per request", n, maxBulk)
	}
	us := make([]upsert, len(req.Contacts))
	for i, raw := range req.Contacts {
		u, err := parseContact(raw, i)
		if err != nil {
			return errorf(http.StatusBadRequest, "bad request", "%v", err)
		}
		us[i] = u
	}
	ids, e := s.applyUpserts(us)
	if e != nil {
		return errAnswer(e)
	}
	a := ok(map[string]any{"contact_ids": ids})
	a.upserted = make([]string, len(us))
	for i, u := range us {
		a.upserted[i] = u.email
	}
	return a
}

// applyUpserts checks the whole request, then applies all of it.
func (s *Server) applyUpserts(us []upsert) ([]string, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := checkUpserts(s.st, us, s.kit.Rejects); e != nil {
		return nil, e
	}
	ids := make([]string, len(us))
	for i, u := range us {
		ids[i] = s.st.apply(u)
	}
	return ids, nil
}

func (s *Server) getContact(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.lookup(p["contact"])
	if c == nil {
		return contactNotFound()
	}
	return ok(s.st.document(c))
}

func contactNotFound() answer {
	return errorf(http.StatusNotFound, "not found", "contact not found")
}

func listNotFound(id string) answer {
	return errorf(http.StatusNotFound, "not found", "list %q not found", id)
}

func (s *Server) deleteContact(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.lookup(p["contact"])
	if c == nil {
		return contactNotFound()
	}
	s.st.delete(c)
	return ok(struct{}{})
}

func (s *Server) unsubscribe(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.lookup(p["contact"])
	if c == nil {
		return contactNotFound()
	}
	c.unsubscribed = true
	return ok(struct{}{})
}

// contactsPage renders one page of contact ids (ascending) after bookmark.
func (s *Server) contactsPage(ids []string, bookmark string) answer {
	pageIDs, next := page(ids, bookmark)
	docs := make([]map[string]any, len(pageIDs))
	for i, id := range pageIDs {
		docs[i] = s.st.document(s.st.contacts[id])
	}
	body := map[string]any{"contacts": docs, "total_contacts": len(ids)}
	if next != "" {
		body["bookmark"] = next
	}
	return ok(body)
}

func (s *Server) listContacts(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.contactsPage(s.st.order, p["bookmark"])
}

func (s *Server) customFields(_ *http.Request, _ map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ok(s.st.customFieldList())
}

func (s *Server) lists(_ *http.Request, _ map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Sorted(maps.Keys(s.st.lists)) // creation order: ids are fixed-width counters
	out := make([]map[string]string, len(ids))
	for i, id := range ids {
		out[i] = map[string]string{"list_id": id, "title": s.st.lists[id].title}
	}
	return ok(map[string]any{"lists": out})
}

func (s *Server) createList(r *http.Request, _ map[string]string) answer {
	var req struct {
		Name string `json:"name"`
	}
	if e := decode(r, &req); e != nil {
		return errAnswer(e)
	}
	if strings.TrimSpace(req.Name) == "" {
		return errorf(http.StatusBadRequest, "bad request", `body must be {"name": "<list title>"}`)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Like the real API, an existing title gets a second list.
	return ok(map[string]string{"list_id": s.st.createList(req.Name)})
}

func (s *Server) listMembers(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.st.lists[p["list"]]
	if l == nil {
		return listNotFound(p["list"])
	}
	return s.contactsPage(sortedKeys(l.members), p["bookmark"])
}

// listAndContact resolves both path parameters; st must be locked.
func (s *Server) listAndContact(p map[string]string) (*list, *contact, *answer) {
	l := s.st.lists[p["list"]]
	if l == nil {
		a := listNotFound(p["list"])
		return nil, nil, &a
	}
	c := s.st.lookup(p["contact"])
	if c == nil {
		a := contactNotFound()
		return nil, nil, &a
	}
	return l, c, nil
}

func (s *Server) isMember(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, c, a := s.listAndContact(p)
	if a != nil {
		return *a
	}
	if !l.members[c.id] {
		return errorf(http.StatusNotFound, "not found", "contact is not on list %q", l.id)
	}
	return ok(struct{}{})
}

func (s *Server) addMember(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, c, a := s.listAndContact(p)
	if a != nil {
		return *a
	}
	s.st.addMember(l, c)
	return ok(struct{}{})
}

func (s *Server) removeMember(_ *http.Request, p map[string]string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, c, a := s.listAndContact(p)
	if a != nil {
		return *a
	}
	if !l.members[c.id] {
		return errorf(http.StatusNotFound, "not found", "contact is not on list %q", l.id)
	}
	s.st.removeMember(l, c)
	return ok(struct{}{})
}

func (s *Server) triggers(_ *http.Request, _ map[string]string) answer {
	return ok(map[string]any{"triggers": triggers})
}

func (s *Server) trigger(_ *http.Request, p map[string]string) answer {
	if !findTrigger(p["trigger"]) {
		return errorf(http.StatusNotFound, "not found", "trigger %q not found", p["trigger"])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.lookup(p["contact"])
	if c == nil {
		return contactNotFound()
	}
	s.st.entries = append(s.st.entries, TriggerEntry{TriggerID: p["trigger"], ContactID: c.id, Email: c.email})
	return ok(struct{}{})
}
