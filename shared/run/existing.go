package run

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// The update and create modes (plan.ModeUpdate, plan.ModeCreate) on a
// destination that cannot limit an upsert itself (Autopilot): before the
// fan-out, the attempt lists the account's contacts once (dest.Directory)
// into runs/<export>/<run>/plans/<base>/existing, a sorted set of keys
// (the first 16 bytes of each normalised email's SHA-256: no address in
// it), and each batch sends only the contacts the mode allows, the others
// reported skipped. A destination that limits upserts itself (Ortto) is
// sent every contact with the mode and says which it skipped.

// writeOf is the write an export's mode allows.
func writeOf(mode string) dest.Write {
	switch mode {
	case plan.ModeUpdate:
		return dest.WriteUpdate
	case plan.ModeCreate:
		return dest.WriteCreate
	}
	return dest.WriteAny
}

// write is the write m's upserts may make: an undo's only update (it
// never creates, so never subscribes, anyone), else as the mode allows.
func (m *Manifest) write() dest.Write {
	if m.Undo != nil {
		return dest.WriteUpdate
	}
	return writeOf(m.Mode)
}

// needsDirectory says whether m's batches are filtered by who exists.
func needsDirectory(m *Manifest) bool {
	return m.write() != dest.WriteAny && !m.Connection.Capabilities().Writes
}

func existingKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + "existing"
}

const existingKeyLen = 16

// existingSet is the sorted keys of the contacts a destination has.
type existingSet struct{ keys []byte }

func existingKeyOf(email string) [existingKeyLen]byte {
	sum := sha256.Sum256([]byte(email))
	return [existingKeyLen]byte(sum[:existingKeyLen])
}

// has says whether the set holds the contact of email, as normalised.
func (e *existingSet) has(email string) bool {
	k := existingKeyOf(email)
	key := func(i int) []byte { return e.keys[i*existingKeyLen : (i+1)*existingKeyLen] }
	n := len(e.keys) / existingKeyLen
	i := sort.Search(n, func(i int) bool { return bytes.Compare(key(i), k[:]) >= 0 })
	return i < n && bytes.Equal(key(i), k[:])
}

// lookupExisting lists the account's contacts through d and writes their
// set for m's batches; it returns how many requests that took.
func (s *Service) lookupExisting(ctx context.Context, d Destination, m *Manifest) (int, error) {
	dir, ok := d.(dest.Directory)
	if !ok {
		return 0, fmt.Errorf("mode %s: %s cannot list its contacts, so it cannot tell whom to leave alone", m.Mode, m.Connection.Title())
	}
	before := d.Stats().Requests
	var keys [][existingKeyLen]byte
	err := dir.Contacts(ctx, func(email string) error {
		if e, err := segment.NormalizeEmail(email); err == nil {
			keys = append(keys, existingKeyOf(e))
		}
		return nil
	})
	spent := d.Stats().Requests - before
	if err != nil {
		return spent, fmt.Errorf("mode %s: %w", m.Mode, err)
	}
	slices.SortFunc(keys, func(a, b [existingKeyLen]byte) int { return bytes.Compare(a[:], b[:]) })
	keys = slices.Compact(keys)
	data := make([]byte, 0, len(keys)*existingKeyLen)
	for _, k := range keys {
		data = append(data, k[:]...)
	}
	if _, err := s.Store.Put(ctx, existingKey(m.Export, m.RunID, m.Base), bytes.NewReader(data), store.PutOptions{}); err != nil {
		return spent, fmt.Errorf("mode %s: recording the contacts %s has: %w", m.Mode, m.Connection.Title(), err)
	}
	return spent, nil
}

// existingCache keeps the last set a process read: a warm container
// serves many batches of one attempt. Each attempt of a run lists the
// account again into the same key (its plan's), so the set is the
// attempt's: a container that served the last attempt would otherwise
// filter this one's batches by who the account had then.
type existingCache struct {
	mu      sync.Mutex
	key     string
	attempt int64
	set     *existingSet
}

// existing reads the set of the plan in's batches are of, as in's attempt listed it.
func (s *Service) existing(ctx context.Context, in GroupInput) (*existingSet, error) {
	key := existingKey(in.Export, in.RunID, in.Plan)
	s.existingSets.mu.Lock()
	defer s.existingSets.mu.Unlock()
	if s.existingSets.key == key && s.existingSets.attempt == in.Attempt {
		return s.existingSets.set, nil
	}
	rc, _, err := s.Store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading the contacts the destination has: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading the contacts the destination has: %w", err)
	}
	if len(data)%existingKeyLen != 0 {
		return nil, &Corrupt{Msg: fmt.Sprintf("%s holds %d bytes, not a whole number of %d-byte keys: start the run again", key, len(data), existingKeyLen)}
	}
	set := &existingSet{keys: data}
	s.existingSets.key, s.existingSets.attempt, s.existingSets.set = key, in.Attempt, set
	return set, nil
}
