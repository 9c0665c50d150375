package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/split"
	"github.com/segpilot/segpilot/shared/store"
)

// A split export's groups are exports of their own (config.Split); what
// they share is the allocation of buckets to groups, kept at
// state/<parent>/split.json and changed only by compare-and-swap, so
// every group's run, in any process, reads the same one. It moves when
// the config's percentages (or salt) do, by split.Evolve: the fewest
// contacts change group.

func splitKey(parent string) string { return "state/" + parent + "/split.json" }

// splitRecord is split.json: the allocation in force, and the change that
// made it (for the reports).
type splitRecord struct {
	Current   split.Allocation `json:"current"`
	ChangedAt time.Time        `json:"changedAt,omitzero"`
	// Moved is how many buckets (hundredths of a percent of contacts) the
	// last change moved, and between which groups.
	Moved int      `json:"moved"`
	Moves []string `json:"moves,omitempty"`
}

// SplitSummary is what a split group's report says of its split.
type SplitSummary struct {
	Parent  string `json:"parent"`
	Group   string `json:"group"`
	Percent string `json:"percent"` // the group's share, "45.00 %"
	// Shares are every group's, "a 45.00 % (list A) · b 45.00 % (list B) · holdout 10.00 %".
	Shares string `json:"shares"`
	// LastChange says how the percentages last changed, and what moved.
	LastChange string `json:"lastChange,omitempty"`
}

// allocation returns the allocation e's split is in force under, making it
// (and recording it, unless dry) when the config's percentages changed.
func (s *Service) allocation(ctx context.Context, e *config.Export, dry bool) (split.Allocation, *SplitSummary, error) {
	sp := e.Split
	groups := sp.AllocationGroups()
	key := splitKey(sp.Parent)
	for {
		var rec splitRecord
		info, err := getJSONInfo(ctx, s.Store, key, &rec)
		switch {
		case errors.Is(err, store.ErrNotFound):
			info.ETag = ""
		case err != nil:
			return split.Allocation{}, nil, err
		}
		if rec.Current.Same(sp.Salt, groups) {
			return rec.Current, summaryOf(sp, rec), nil
		}
		next, err := rec.Current.Evolve(sp.Salt, groups)
		if err != nil {
			return split.Allocation{}, nil, fmt.Errorf("export %s: %w", sp.Parent, err)
		}
		moved := splitRecord{Current: next, ChangedAt: s.now()}
		if len(rec.Current.Owner) > 0 {
			moved.Moved, moved.Moves = split.Moves(rec.Current, next)
		}
		if dry {
			return next, summaryOf(sp, moved), nil
		}
		b, err := json.Marshal(moved)
		if err != nil {
			return split.Allocation{}, nil, err
		}
		_, err = s.Store.Put(ctx, key, bytes.NewReader(b), store.PutOptions{ContentType: "application/json", IfNoneMatch: info.ETag == "", IfMatch: info.ETag})
		switch {
		case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrChanged):
			continue // another group's run changed it first: read theirs
		case err != nil:
			return split.Allocation{}, nil, fmt.Errorf("writing %s: %w", key, err)
		}
		s.Logger().Info("split changed", "export", sp.Parent, "status", "split", "moved", split.Percent(moved.Moved))
		return next, summaryOf(sp, moved), nil
	}
}

func summaryOf(sp *config.Split, rec splitRecord) *SplitSummary {
	sum := &SplitSummary{Parent: sp.Parent, Group: sp.Group}
	var shares []string
	for _, g := range sp.Groups {
		share := g.Name + " " + split.Percent(g.Share)
		if g.List == "" {
			share += " (held out)"
		} else {
			share += " (" + g.List + ")"
		}
		if g.Name == sp.Group {
			sum.Percent = split.Percent(g.Share)
		}
		shares = append(shares, share)
	}
	sum.Shares = strings.Join(shares, " · ")
	if !rec.ChangedAt.IsZero() && rec.Moved > 0 && len(rec.Moves) > 0 {
		sum.LastChange = fmt.Sprintf("the split changed %s: %s of contacts changed group (%s)",
			rec.ChangedAt.UTC().Format(time.RFC3339), split.Percent(rec.Moved), strings.Join(rec.Moves, ", "))
	}
	return sum
}
