package autopilot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/segment"
)

// EnsureList returns the id of the list titled title, creating it only when
// no such list exists. With several lists of that title it picks the lowest
// list_id. It remembers nothing: its caller resolves a run's list once and
// keeps it (run.Service, per process), so that concurrent batches never
// race to create one.
func (c *Client) EnsureList(ctx context.Context, title string) (string, error) {
	if strings.TrimSpace(title) == "" {
		return "", errors.New("ensuring list: empty title")
	}
	id, err := findList(ctx, c.hc, title)
	if err != nil {
		return "", fmt.Errorf("ensuring list %q: %w", title, err)
	}
	if id == "" {
		var created struct {
			ListID string `json:"list_id"`
		}
		r := httpx.Request{
			Method: http.MethodPost,
			Path:   "/list",
			Body:   map[string]string{"name": title},
			// A POST /list that timed out may still have been applied
			// (Autopilot documents this); look again before creating a
			// second list with the same title.
			BeforeRetry: func(ctx context.Context, probe httpx.Caller) (bool, error) {
				found, err := findList(ctx, probe, title)
				id = found
				return found != "", err
			},
		}
		if err := c.do(ctx, r, &created); err != nil {
			return "", fmt.Errorf("creating list %q: %w", title, err)
		}
		if id == "" {
			id = created.ListID
		}
		if id == "" {
			return "", fmt.Errorf("creating list %q: answer carried no list_id", title)
		}
	}
	return id, nil
}

// findList returns the lowest list_id titled title, or "" when none is.
func findList(ctx context.Context, hc httpx.Caller, title string) (string, error) {
	var answer struct {
		Lists []struct {
			ListID string `json:"list_id"`
			Title  string `json:"title"`
		} `json:"lists"`
	}
	if err := hc.Do(ctx, httpx.Request{Method: http.MethodGet, Path: "/lists"}, &answer); err != nil {
		return "", fmt.Errorf("listing lists: %w", err)
	}
	var ids []string
	for _, l := range answer.Lists {
		if l.Title == title && l.ListID != "" {
			ids = append(ids, l.ListID)
		}
	}
	if len(ids) == 0 {
		return "", nil
	}
	return slices.Min(ids), nil
}

// RemoveFromList takes email off the list. A contact that is not a member,
// or unknown, is not an error, so a re-run is harmless.
func (c *Client) RemoveFromList(ctx context.Context, listID, email string) error {
	path := "/list/" + url.PathEscape(listID) + "/contact/" + url.PathEscape(email)
	err := c.do(ctx, httpx.Request{Method: http.MethodDelete, Path: path}, nil)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("removing %s from list %s: %w", segment.MaskEmail(email), listID, err)
	}
	return nil
}
