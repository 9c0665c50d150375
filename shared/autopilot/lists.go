package autopilot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/segment"
)

// EnsureList is PrepareList without claims or notices: the id of the
// list titled title, created when missing.
func (c *Client) EnsureList(ctx context.Context, title string) (string, error) {
	return c.PrepareList(ctx, dest.ListSpec{Title: title})
}

// PrepareList returns the id of the list titled spec.Title. With a
// Registry, the list is claimed before it is created, so exports sharing
// it in other processes create it once, and the recorded id is used while
// Autopilot lists it; without, the oldest list with the title is used, or
// one is created. Either way GET /lists is sent, so a refused key stops
// the run before anything is. Autopilot creates custom fields on first
// use: there is nothing to check for them.
//
// Autopilot allows several lists with one title. GET /lists gives lists
// no creation date, so its order (creation order, as far as it is known)
// stands for age; the list a registry recorded wins over an older one,
// since earlier runs sent to it. The others are named in a notice and
// never sent to.
func (c *Client) PrepareList(ctx context.Context, spec dest.ListSpec) (string, error) {
	title := spec.Title
	if strings.TrimSpace(title) == "" {
		return "", errors.New("preparing list: empty title")
	}
	lists := listObjects{c: c, title: title}
	var res dest.Resolved
	var err error
	if spec.Registry != nil {
		res, err = spec.Registry.Resolve(ctx, dest.ObjectList, title, lists)
	} else {
		res, err = resolveUnclaimed(ctx, lists)
	}
	if err != nil {
		return "", fmt.Errorf("preparing list %q: %w", title, err)
	}
	if res.Replaced != "" {
		how := "the oldest other list with the title"
		if res.Created {
			how = "created now"
		}
		spec.Note(fmt.Sprintf("Autopilot no longer holds list %s titled %q (deleted, or the API key now opens another account): contacts go to %s, %s.",
			res.Replaced, title, res.ID, how))
	}
	if len(res.Others) > 0 {
		why := "the oldest"
		if res.Recorded {
			why = "the one earlier runs sent to"
		}
		spec.Note(fmt.Sprintf("Autopilot holds %d lists titled %q (%s): contacts go to %s, %s, and never to %s.",
			1+len(res.Others), title, strings.Join(append([]string{res.ID}, res.Others...), ", "), res.ID, why, orList(res.Others)))
	}
	return res.ID, nil
}

// orList is "a", "a or b", "a, b or c".
func orList(ids []string) string {
	if len(ids) == 1 {
		return ids[0]
	}
	return strings.Join(ids[:len(ids)-1], ", ") + " or " + ids[len(ids)-1]
}

// resolveUnclaimed is Resolve without a registry, for a single process.
func resolveUnclaimed(ctx context.Context, lists listObjects) (dest.Resolved, error) {
	ids, err := lists.Find(ctx)
	if err != nil {
		return dest.Resolved{}, err
	}
	if len(ids) > 0 {
		return dest.Resolved{ID: ids[0], Others: ids[1:]}, nil
	}
	id, err := lists.Create(ctx)
	if err != nil {
		return dest.Resolved{}, err
	}
	return dest.Resolved{ID: id, Created: true}, nil
}

// listObjects is the lists titled title, as a Registry sees them.
type listObjects struct {
	c     *Client
	title string
}

func (l listObjects) Find(ctx context.Context) ([]string, error) {
	return findLists(ctx, l.c.hc, l.title)
}

// Create sends POST /list. One that got no answer, or a 5xx, may have
// been applied: before a retry it looks again, and a list with the title
// found then is this one (Create follows a find that found none), so it
// never sends a second.
func (l listObjects) Create(ctx context.Context) (string, error) {
	var created struct {
		ListID string `json:"list_id"`
	}
	var found string
	r := httpx.Request{
		Method: http.MethodPost,
		Path:   "/list",
		Body:   map[string]string{"name": l.title},
		BeforeRetry: func(ctx context.Context, probe httpx.Caller) (bool, error) {
			ids, err := findLists(ctx, probe, l.title)
			if len(ids) > 0 {
				found = ids[0]
			}
			return found != "", err
		},
	}
	if err := l.c.hc.Do(ctx, r, &created); err != nil {
		return "", fmt.Errorf("creating list: %w", err)
	}
	switch {
	case found != "":
		return found, nil
	case created.ListID == "":
		return "", errors.New("creating list: the answer carried no list_id")
	}
	return created.ListID, nil
}

// findLists returns the ids of the lists titled title, in the order GET
// /lists gives them: oldest first.
func findLists(ctx context.Context, hc httpx.Caller, title string) ([]string, error) {
	all, err := allLists(ctx, hc)
	var ids []string
	for _, l := range all {
		if l.Title == title && l.ListID != "" {
			ids = append(ids, l.ListID)
		}
	}
	return ids, err
}

type listEntry struct {
	ListID string `json:"list_id"`
	Title  string `json:"title"`
}

// allLists is GET /lists.
func allLists(ctx context.Context, hc httpx.Caller) ([]listEntry, error) {
	var answer struct {
		Lists []listEntry `json:"lists"`
	}
	if err := hc.Do(ctx, httpx.Request{Method: http.MethodGet, Path: "/lists"}, &answer); err != nil {
		return nil, fmt.Errorf("listing lists: %w", err)
	}
	return answer.Lists, nil
}

// listCheck tells a 404 about a list apart from a 404 about a contact,
// for one Upsert or Remove: Autopilot answers 404 both for a contact that
// is not on a list and for a list it does not hold, and its wording of
// either is not documented, while GET /lists is. It lists at most once
// per call, and only after a 404.
type listCheck struct {
	c      *Client
	listID string
	exists bool
}

// gone reports whether Autopilot no longer lists the list, as an error
// matching dest.ErrListGone; nil when it does.
func (lc *listCheck) gone(ctx context.Context) error {
	if lc.exists {
		return nil
	}
	all, err := allLists(ctx, lc.c.hc)
	if err != nil {
		return fmt.Errorf("telling a 404 apart: %w", err)
	}
	for _, l := range all {
		if l.ListID == lc.listID {
			lc.exists = true
			return nil
		}
	}
	return fmt.Errorf("%w: Autopilot no longer lists %s (deleted by hand, or the API key now opens another account)", dest.ErrListGone, lc.listID)
}

// RemoveFromList takes email off the list. A contact that is not a member,
// or unknown, is not an error, so a re-run is harmless; a list Autopilot
// no longer holds is (dest.ErrListGone).
func (c *Client) RemoveFromList(ctx context.Context, listID, email string) error {
	return c.removeFromList(ctx, &listCheck{c: c, listID: listID}, email)
}

func (c *Client) removeFromList(ctx context.Context, lc *listCheck, email string) error {
	path := "/list/" + url.PathEscape(lc.listID) + "/contact/" + url.PathEscape(email)
	err := c.do(ctx, httpx.Request{Method: http.MethodDelete, Path: path}, nil)
	if errors.Is(err, ErrNotFound) {
		err = lc.gone(ctx)
	}
	if err != nil {
		return fmt.Errorf("removing %s from list %s: %w", segment.MaskEmail(email), lc.listID, err)
	}
	return nil
}
