package run

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/segpilot/segpilot/shared/store"
)

// TestExistingSetIsTheAttempts checks that a warm process filters an
// attempt's batches by the set that attempt listed, not by the one it
// read for the run's last attempt under the same key.
func TestExistingSetIsTheAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.NewFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{Store: st}
	in := GroupInput{Export: "weekly", RunID: "run-1", Plan: "none", Attempt: 1}
	list := func(emails ...string) {
		t.Helper()
		var keys [][existingKeyLen]byte
		for _, e := range emails {
			keys = append(keys, existingKeyOf(e))
		}
		slices.SortFunc(keys, func(a, b [existingKeyLen]byte) int { return bytes.Compare(a[:], b[:]) })
		var data []byte
		for _, k := range keys {
			data = append(data, k[:]...)
		}
		if _, err := st.Put(ctx, existingKey(in.Export, in.RunID, in.Plan), bytes.NewReader(data), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	has := func(email string) bool {
		t.Helper()
		set, err := s.existing(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return set.has(email)
	}

	list("ann@example.com")
	if !has("ann@example.com") || has("bob@example.com") {
		t.Fatal("attempt 1: want ann and not bob")
	}
	// Attempt 1 created bob, then failed; attempt 2 lists the account again.
	list("ann@example.com", "bob@example.com")
	in.Attempt = 2
	if !has("bob@example.com") {
		t.Fatal("attempt 2 was filtered by attempt 1's set: bob, created since, read as not in the account")
	}
	// The attempt's later batches are served from the set read once.
	if err := st.Delete(ctx, existingKey(in.Export, in.RunID, in.Plan)); err != nil {
		t.Fatal(err)
	}
	if !has("bob@example.com") {
		t.Fatal("attempt 2's next batch: want the set it read")
	}
}
