package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/segpilot/segpilot/shared/simkit"
)

// maxBulk is the real API's limit of contacts per bulk upsert.
const maxBulk = 100

// upsert is one contact of an upsert request, parsed and checked.
type upsert struct {
	email    string
	newEmail string
	fields   map[string]any // nil value = clear the field
	custom   map[string]any // nil value = clear the field
	listID   string
	// unsubscribed is nil when the upsert does not carry the key; false
	// re-subscribes, as Autopilot does.
	unsubscribed *bool
}

var customTypes = map[string]bool{"string": true, "integer": true, "float": true, "date": true, "boolean": true}

// readOnlyKeys are keys of a contact document that an upsert ignores, so a
// client may send back what GET /contact answered.
var readOnlyKeys = map[string]bool{
	"contact_id": true, "lists": true, "custom_fields": true, "created_at": true, "updated_at": true,
}

// splitCustomKey turns "string--Loyalty--Tier" into ("string", "Loyalty Tier").
func splitCustomKey(k string) (typ, name string) {
	typ, name, _ = strings.Cut(k, "--")
	return typ, strings.ReplaceAll(name, "--", " ")
}

// parseContact checks one contact object of an upsert; i is its position,
// for messages.
func parseContact(raw json.RawMessage, i int) (upsert, error) {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return upsert{}, fmt.Errorf("contact %d is not a JSON object", i)
	}
	u := upsert{fields: map[string]any{}, custom: map[string]any{}}
	for k, v := range m {
		switch {
		case k == "Email":
			s, ok := v.(string)
			if !ok || !strings.Contains(s, "@") {
				return upsert{}, fmt.Errorf("contact %d: Email must be an email address", i)
			}
			u.email = s
		case k == "_NewEmail":
			s, ok := v.(string)
			if !ok || !strings.Contains(s, "@") {
				return upsert{}, fmt.Errorf("contact %d: _NewEmail must be an email address", i)
			}
			u.newEmail = s
		case k == "_autopilot_list":
			s, ok := v.(string)
			if !ok || s == "" {
				return upsert{}, fmt.Errorf("contact %d: _autopilot_list must be a list id", i)
			}
			u.listID = s
		case k == "unsubscribed":
			b, ok := v.(bool)
			if !ok {
				return upsert{}, fmt.Errorf("contact %d: unsubscribed must be true or false", i)
			}
			u.unsubscribed = &b
		case k == "custom":
			cm, ok := v.(map[string]any)
			if !ok && v != nil {
				return upsert{}, fmt.Errorf("contact %d: custom must be an object", i)
			}
			for ck, cv := range cm {
				typ, name := splitCustomKey(ck)
				if !customTypes[typ] || name == "" {
					return upsert{}, fmt.Errorf("contact %d: custom field %q must look like <type>--<Name> with type string, integer, float, date or boolean", i, ck)
				}
				u.custom[ck] = cv
			}
		case strings.HasPrefix(k, "_") || readOnlyKeys[k]:
			// Other underscore keys steer the real API (sessions, notify
			// flags); the simulator ignores them.
		default:
			u.fields[k] = v
		}
	}
	if u.email == "" {
		return upsert{}, fmt.Errorf("contact %d: Email is required", i)
	}
	return u, nil
}

// apiError is an answer that is not 2xx.
type apiError struct {
	status int
	code   string
	msg    string
	faults simkit.FaultSet // the injected faults that caused it, for Counters
}

func (e *apiError) Error() string { return e.msg }

// checkUpserts validates a whole upsert request against the current state;
// st must be locked. Any error rejects the whole request.
func checkUpserts(st *store, us []upsert, rejects func(string) bool) *apiError {
	var bad []string
	for _, u := range us {
		for _, e := range []string{u.email, u.newEmail} {
			if e != "" && rejects(e) {
				bad = append(bad, e)
			}
		}
	}
	if len(bad) > 0 {
		return &apiError{status: http.StatusBadRequest, code: "invalid email", msg: "rejected email(s): " + strings.Join(bad, ", "), faults: simkit.FaultReject}
	}
	batch := map[string]int{} // lower-case email -> how many contacts of the batch name it
	for _, u := range us {
		batch[emailKey(u.email)]++
	}
	for i, u := range us {
		if u.listID != "" && st.lists[u.listID] == nil {
			return &apiError{status: http.StatusNotFound, code: "list not found", msg: fmt.Sprintf("contact %d: _autopilot_list %q does not exist", i, u.listID)}
		}
		if u.newEmail == "" || emailKey(u.newEmail) == emailKey(u.email) {
			continue
		}
		// Checked against the state and the batch up front so applying
		// can never half-fail.
		if _, taken := st.byEmail[emailKey(u.newEmail)]; taken || batch[emailKey(u.newEmail)] > 0 || batch[emailKey(u.email)] > 1 {
			return &apiError{status: http.StatusBadRequest, code: "email in use", msg: fmt.Sprintf("contact %d: _NewEmail is already used by another contact", i)}
		}
		batch[emailKey(u.newEmail)]++
	}
	return nil
}
