package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segpilot/segpilot/shared/runner"
	"github.com/segpilot/segpilot/shared/store"
)

// namesPrefix holds one object per execution name used in this bucket
// folder, so every local process sees the names the others used, as every
// caller of Step Functions sees its state machine's.
const namesPrefix = "executions/"

// storeNames implements runner.ExecutionNames on the bucket (folder).
type storeNames struct {
	st   store.ObjectStore
	now  func() time.Time
	self string // the process whose runner executes the names it claims
}

var _ runner.ExecutionNames = storeNames{}

type nameRecord struct {
	StartedAt time.Time `json:"startedAt"`
	ClosedAt  time.Time `json:"closedAt,omitzero"`
	Process   string    `json:"process"` // whose runner executes it
}

func (n storeNames) key(name string) string { return namesPrefix + name + ".json" }

// Claim takes name by a create-only write, so two processes racing for it
// cannot both win; a name whose execution closed more than
// runner.NameReuseAfter ago is taken over by a write conditional on it.
func (n storeNames) Claim(ctx context.Context, name string) (bool, error) {
	rec, err := json.Marshal(nameRecord{StartedAt: n.now().UTC(), Process: n.self})
	if err != nil {
		return false, err
	}
	_, err = n.st.Put(ctx, n.key(name), bytes.NewReader(rec), store.PutOptions{IfNoneMatch: true, ContentType: "application/json"})
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, store.ErrExists) {
		return false, fmt.Errorf("recording execution name %s: %w", name, err)
	}
	old, etag, err := n.read(ctx, name)
	if err != nil {
		return false, err
	}
	if old.ClosedAt.IsZero() || n.now().Sub(old.ClosedAt) <= runner.NameReuseAfter {
		return false, nil
	}
	_, err = n.st.Put(ctx, n.key(name), bytes.NewReader(rec), store.PutOptions{IfMatch: etag, ContentType: "application/json"})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrChanged), errors.Is(err, store.ErrExists):
		return false, nil // another process took it first
	}
	return false, fmt.Errorf("recording execution name %s: %w", name, err)
}

// Closed records when name's execution ended: its name is kept from then.
func (n storeNames) Closed(ctx context.Context, name string) error {
	rec, _, err := n.read(ctx, name)
	if err != nil {
		return err
	}
	rec.ClosedAt = n.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := n.st.Put(ctx, n.key(name), bytes.NewReader(b), store.PutOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("recording the end of execution %s: %w", name, err)
	}
	return nil
}

// read returns name's record; an error wrapping store.ErrNotFound when
// the name was never claimed.
func (n storeNames) read(ctx context.Context, name string) (nameRecord, string, error) {
	rc, info, err := n.st.Get(ctx, n.key(name))
	if err != nil {
		return nameRecord{}, "", fmt.Errorf("reading execution name %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nameRecord{}, "", fmt.Errorf("reading execution name %s: %w", name, err)
	}
	var rec nameRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nameRecord{}, "", fmt.Errorf("decoding %s: %w", n.key(name), err)
	}
	return rec, info.ETag, nil
}
