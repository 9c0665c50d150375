package autopilot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/segment"
)

// maxBatch is Autopilot's limit of contacts per POST /contacts.
const maxBatch = 100

// Contact is what segpilot writes to Autopilot. Empty fields are left out of
// the request so an export never blanks a value Autopilot holds.
type Contact struct {
	Email     string
	FirstName string
	LastName  string
	// Custom maps Autopilot custom keys ("string--Loyalty--Tier") to values.
	Custom map[string]any
}

// Status is how one contact of a bulk upsert ended.
type Status = dest.Status

const (
	StatusSent     = dest.Sent     // Autopilot accepted the contact
	StatusRejected = dest.Rejected // Autopilot refused this contact (400); resending will not help
	StatusFailed   = dest.Failed   // not delivered for a transient or run-wide reason; a re-run may help
)

// Outcome is the result for one input contact.
type Outcome struct {
	Email     string
	Status    Status
	Reason    string // why it was rejected or failed
	ContactID string // Autopilot's id when sent and reported by the API
}

// payload is the contact document. It never carries "unsubscribed": an
// export must not re-subscribe someone who unsubscribed in Autopilot.
func (ct Contact) payload(listID string) map[string]any {
	doc := map[string]any{"Email": ct.Email}
	if strings.TrimSpace(ct.FirstName) != "" {
		doc["FirstName"] = ct.FirstName
	}
	if strings.TrimSpace(ct.LastName) != "" {
		doc["LastName"] = ct.LastName
	}
	custom := map[string]any{}
	for k, v := range ct.Custom {
		if !isEmpty(v) {
			custom[k] = v
		}
	}
	if len(custom) > 0 {
		doc["custom"] = custom
	}
	if listID != "" {
		doc["_autopilot_list"] = listID
	}
	return doc
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(x) == ""
	}
	return false
}

// UpsertContacts upserts contacts in calls of at most 100, adding each to
// listID when it is not empty. It returns one Outcome per contact, in input
// order. A call answered 400 is split in halves until the offending contacts
// are isolated and rejected; the others still go through. The error is not
// nil only when the key was refused (*UnauthorizedError), the list is
// gone (dest.ErrListGone) or ctx ended; the contacts not sent then end as
// StatusFailed.
func (c *Client) UpsertContacts(ctx context.Context, listID string, contacts []Contact) ([]Outcome, error) {
	out := make([]Outcome, len(contacts))
	pending := make([]int, 0, len(contacts))
	for i, ct := range contacts {
		out[i].Email = ct.Email
		if strings.TrimSpace(ct.Email) == "" {
			out[i].Status, out[i].Reason = StatusRejected, "missing email"
			continue
		}
		pending = append(pending, i)
	}
	lc := &listCheck{c: c, listID: listID}
	for start := 0; start < len(pending); start += maxBatch {
		batch := pending[start:min(start+maxBatch, len(pending))]
		if err := c.sendBatch(ctx, lc, contacts, batch, out); err != nil {
			for i := range out {
				if out[i].Status == "" {
					out[i].Status, out[i].Reason = StatusFailed, "not attempted: "+err.Error()
				}
			}
			return out, fmt.Errorf("upserting contacts (batch from %d): %w", start/maxBatch+1, err)
		}
	}
	return out, nil
}

// sendBatch upserts contacts[idx...] into lc's list and records their
// outcomes. It returns an error only when the whole call must stop.
func (c *Client) sendBatch(ctx context.Context, lc *listCheck, contacts []Contact, idx []int, out []Outcome) error {
	docs := make([]map[string]any, len(idx))
	for j, i := range idx {
		docs[j] = contacts[i].payload(lc.listID)
	}
	var answer struct {
		ContactIDs []string `json:"contact_ids"`
	}
	// Upserts are keyed by email, so replaying a call that timed out after
	// being applied cannot create duplicates.
	err := c.do(ctx, httpx.Request{Method: http.MethodPost, Path: "/contacts", Body: map[string]any{"contacts": docs}}, &answer)
	var ae *APIError
	var refused *UnauthorizedError
	switch {
	case err == nil:
		for j, i := range idx {
			out[i].Status = StatusSent
			if j < len(answer.ContactIDs) {
				out[i].ContactID = answer.ContactIDs[j]
			}
		}
		return nil
	case errors.As(err, &refused) || ctx.Err() != nil:
		return err
	case errors.Is(err, ErrNotFound) && lc.listID != "":
		// Autopilot answers 404 for the whole call when _autopilot_list
		// names a list it does not hold.
		gone := lc.gone(ctx)
		if errors.Is(gone, dest.ErrListGone) {
			return gone
		}
		reason := err.Error()
		if gone != nil { // could not tell: the 404 and why
			reason += "; " + gone.Error()
		}
		for _, i := range idx {
			out[i].Status, out[i].Reason = StatusFailed, reason
		}
		return nil
	case errors.As(err, &ae) && splittable(ae):
		if len(idx) == 1 {
			reason := ae.Message
			if reason == "" {
				reason = fmt.Sprintf("rejected by Autopilot (status %d)", ae.Status)
			}
			out[idx[0]].Status, out[idx[0]].Reason = StatusRejected, reason
			return nil
		}
		// An answer naming the addresses it refused spares the halving
		// down to each of them (about 14 calls a contact): those are
		// rejected, the rest sent again in one call.
		if named, rest := namedIn(ae.Message, contacts, idx); len(named) > 0 {
			for _, i := range named {
				out[i].Status, out[i].Reason = StatusRejected, reasonFor(ae.Message, contacts, named, i)
			}
			if len(rest) == 0 {
				return nil
			}
			return c.sendBatch(ctx, lc, contacts, rest, out)
		}
		mid := len(idx) / 2
		if err := c.sendBatch(ctx, lc, contacts, idx[:mid], out); err != nil {
			return err
		}
		return c.sendBatch(ctx, lc, contacts, idx[mid:], out)
	default:
		for _, i := range idx {
			out[i].Status, out[i].Reason = StatusFailed, err.Error()
		}
		return nil
	}
}

// namedIn splits idx into the contacts whose address msg names (as a
// whole word, case aside) and the others.
func namedIn(msg string, contacts []Contact, idx []int) (named, rest []int) {
	words := map[string]bool{}
	for _, w := range strings.FieldsFunc(strings.ToLower(msg), func(r rune) bool {
		return unicode.IsSpace(r) || strings.ContainsRune(`,;"'()[]<>`, r)
	}) {
		words[strings.TrimRight(w, ".:")] = true
	}
	for _, i := range idx {
		if words[strings.ToLower(strings.TrimSpace(contacts[i].Email))] {
			named = append(named, i)
		} else {
			rest = append(rest, i)
		}
	}
	return named, rest
}

// reasonFor is msg, an answer naming several refused addresses, as the
// reason of contact i alone: the text around the addresses, with its own
// (as a single contact's answer would read), never the others'.
func reasonFor(msg string, contacts []Contact, named []int, i int) string {
	lower := strings.ToLower(msg)
	first, last := len(msg), 0
	for _, j := range named {
		e := strings.ToLower(strings.TrimSpace(contacts[j].Email))
		if k := strings.Index(lower, e); k >= 0 {
			first = min(first, k)
			last = max(last, k+len(e))
		}
	}
	if first >= last {
		return segment.MaskEmails(msg)
	}
	return msg[:first] + strings.TrimSpace(contacts[i].Email) + segment.MaskEmails(msg[last:])
}

// splittable reports whether a refused bulk call may succeed for part of its
// contacts: 400 names bad content, 413 a payload too large.
func splittable(ae *APIError) bool {
	return !ae.Retryable && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusRequestEntityTooLarge)
}

// UpsertContact upserts one contact (POST /contact) and returns its id.
func (c *Client) UpsertContact(ctx context.Context, listID string, ct Contact) (string, error) {
	if strings.TrimSpace(ct.Email) == "" {
		return "", errors.New("upserting contact: missing email")
	}
	var answer struct {
		ContactID string `json:"contact_id"`
	}
	err := c.do(ctx, httpx.Request{Method: http.MethodPost, Path: "/contact", Body: map[string]any{"contact": ct.payload(listID)}}, &answer)
	if err != nil {
		return "", fmt.Errorf("upserting contact %s: %w", segment.MaskEmail(ct.Email), err)
	}
	return answer.ContactID, nil
}

// GetContact returns the contact document; an unknown contact gives an error
// matching ErrNotFound.
func (c *Client) GetContact(ctx context.Context, idOrEmail string) (map[string]any, error) {
	var doc map[string]any
	if err := c.do(ctx, httpx.Request{Method: http.MethodGet, Path: "/contact/" + url.PathEscape(idOrEmail)}, &doc); err != nil {
		return nil, fmt.Errorf("getting contact %s: %w", segment.MaskEmails(idOrEmail), err)
	}
	return doc, nil
}

// CustomField is a custom field declared in the account.
type CustomField struct {
	Name      string `json:"name"`
	FieldType string `json:"fieldType"`
}

// CustomFields lists the account's declared custom fields.
func (c *Client) CustomFields(ctx context.Context) ([]CustomField, error) {
	var fields []CustomField
	if err := c.do(ctx, httpx.Request{Method: http.MethodGet, Path: "/contacts/custom_fields"}, &fields); err != nil {
		return nil, fmt.Errorf("listing custom fields: %w", err)
	}
	return fields, nil
}

// Account returns the account document; it is the cheap "test connection" call.
func (c *Client) Account(ctx context.Context) (map[string]any, error) {
	var doc map[string]any
	if err := c.do(ctx, httpx.Request{Method: http.MethodGet, Path: "/account"}, &doc); err != nil {
		return nil, fmt.Errorf("getting account: %w", err)
	}
	return doc, nil
}
