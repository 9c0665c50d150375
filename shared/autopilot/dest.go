package autopilot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/suggest"
)

// DefaultBaseURL is Autopilot's API host; its calls are under /v1.
const DefaultBaseURL = "https://api2.autopilothq.com"

// Kind describes Autopilot to the registry (shared/kinds).
func Kind() dest.Kind {
	return dest.Kind{
		Name: "autopilot", Title: "Autopilot", DefaultBaseURL: DefaultBaseURL, APIPath: "/v1",
		FieldHelp:    `TYPE--Name, e.g. "string--Loyalty--Tier"`,
		TextField:    "string--Name",
		FieldType:    fieldType,
		Capabilities: dest.Capabilities{MaxBatch: maxBatch, RemoveBatch: 1}, // no bulk removal
		New: func(c dest.Connection) (dest.Destination, error) {
			return New(Options{BaseURL: c.BaseURL, APIKey: c.APIKey, HTTPClient: c.HTTPClient,
				Limiter: c.Limiter, Logger: c.Logger, Timeout: c.Timeout})
		},
	}
}

var (
	customKeyPattern = regexp.MustCompile(`^(string|integer|float|date|boolean)--[A-Za-z0-9]+(--[A-Za-z0-9]+)*$`)
	customTypes      = []string{"string", "integer", "float", "date", "boolean"}
	// Type names people reach for that Autopilot spells differently.
	customTypeAliases = map[string]string{
		"str": "string", "text": "string", "int": "integer", "number": "float",
		"decimal": "float", "double": "float", "bool": "boolean",
		"datetime": "date", "timestamp": "date",
	}
)

// fieldType checks an Autopilot custom key ("string--Loyalty--Tier"): its
// prefix is the value's type.
func fieldType(key string, decimal bool) (dest.Type, error) {
	if decimal {
		return "", errors.New(`a field to mark decimal: Autopilot's float--Name fields take decimals`)
	}
	if !customKeyPattern.MatchString(key) {
		return "", fmt.Errorf("an Autopilot custom field key%s: write TYPE--Name, TYPE one of %s, Name of letters and digits (more words joined by --), e.g. \"string--Loyalty--Tier\"",
			keyHint(key), strings.Join(customTypes, ", "))
	}
	typ, _, _ := strings.Cut(key, "--")
	return dest.Type(typ), nil
}

// keyHint suggests a fix for a mistyped type prefix ("int--Orders").
func keyHint(key string) string {
	typ, rest, found := strings.Cut(key, "--")
	if !found || slices.Contains(customTypes, typ) {
		return ""
	}
	fixed, ok := customTypeAliases[strings.ToLower(typ)]
	if !ok {
		if len(typ) > 64 {
			return ""
		}
		if fixed, ok = suggest.Closest(typ, customTypes, strings.ToLower, func(n int) int { return min(1+n/5, 3) }); !ok {
			return ""
		}
	}
	if candidate := fixed + "--" + rest; customKeyPattern.MatchString(candidate) {
		return fmt.Sprintf(" (did you mean %q?)", candidate)
	}
	return ""
}

var (
	_ dest.Destination = (*Client)(nil)
	_ dest.Directory   = (*Client)(nil)
)

// Contacts pages through GET /contacts, 100 contacts a request, and calls
// each with every contact's email: the whole account, since a contact the
// account has but the export's list lacks is one an update-only export
// updates (and puts on the list), and one a create-only export must leave
// alone, as Ortto's skip_non_existing and merge_strategy 3 do.
func (c *Client) Contacts(ctx context.Context, each func(email string) error) error {
	path := "/contacts"
	for page := 1; ; page++ {
		var answer struct {
			Contacts []struct {
				Email string `json:"Email"`
			} `json:"contacts"`
			Bookmark string `json:"bookmark"`
		}
		if err := c.do(ctx, httpx.Request{Method: http.MethodGet, Path: path}, &answer); err != nil {
			return fmt.Errorf("listing the account's contacts (page %d): %w", page, err)
		}
		for _, ct := range answer.Contacts {
			if err := each(ct.Email); err != nil {
				return err
			}
		}
		if answer.Bookmark == "" || len(answer.Contacts) == 0 {
			return nil
		}
		path = "/contacts/" + url.PathEscape(answer.Bookmark)
	}
}

// Upsert is UpsertContacts for the port's contacts. Autopilot has no
// update-only or create-only upsert: the caller sends only the contacts
// the export's mode allows (Contacts says who exists), with WriteAny.
func (c *Client) Upsert(ctx context.Context, listID string, contacts []dest.Contact, w dest.Write) ([]dest.Outcome, error) {
	if w != dest.WriteAny {
		return nil, fmt.Errorf("upserting contacts: Autopilot cannot limit an upsert to %s; filter them with Contacts first", map[dest.Write]string{dest.WriteUpdate: "updates", dest.WriteCreate: "creations"}[w])
	}
	cs := make([]Contact, len(contacts))
	for i, ct := range contacts {
		cs[i] = Contact{Email: ct.Email, FirstName: ct.FirstName, LastName: ct.LastName}
		if len(ct.Custom) > 0 {
			cs[i].Custom = make(map[string]any, len(ct.Custom))
			for _, v := range ct.Custom {
				cs[i].Custom[v.Key] = v.Value
			}
		}
	}
	outs, err := c.UpsertContacts(ctx, listID, cs)
	res := make([]dest.Outcome, len(outs))
	for i, o := range outs {
		res[i] = dest.Outcome{Email: o.Email, Status: o.Status, Reason: o.Reason, ID: o.ContactID}
	}
	return res, err
}

// Remove takes each email off the list with a request of its own:
// Autopilot has no bulk removal. It stops at a refused key, a list that is
// gone (dest.ErrListGone) or when ctx ends; the emails not done then end
// as failed.
func (c *Client) Remove(ctx context.Context, listID string, emails []string) ([]dest.Outcome, error) {
	out := make([]dest.Outcome, len(emails))
	lc := &listCheck{c: c, listID: listID}
	for i, email := range emails {
		out[i].Email = email
		err := c.removeFromList(ctx, lc, email)
		var refused *UnauthorizedError
		switch {
		case err == nil:
			out[i].Status = dest.Sent
		case errors.As(err, &refused) || errors.Is(err, dest.ErrListGone) || ctx.Err() != nil:
			for j := i; j < len(emails); j++ {
				out[j].Email, out[j].Status, out[j].Reason = emails[j], dest.Failed, "not attempted: "+err.Error()
			}
			return out, err
		default:
			// RemoveFromList's error names the removal already.
			out[i].Status, out[i].Reason = dest.Failed, err.Error()
		}
	}
	return out, nil
}
