package plan

import (
	"bytes"
	"encoding/json"

	"github.com/segpilot/segpilot/shared/segment"
)

// What a plan does with one contact (Explained.Action).
const (
	ActionAdd        = "add"
	ActionChange     = "change"
	ActionUnchanged  = "unchanged"
	ActionResend     = "resend" // unchanged, sent by a full resync
	ActionRemove     = "remove"
	ActionKeep       = "keep" // not in the file, left on the list (only mirror removes)
	ActionRejected   = "rejected"
	ActionDuplicate  = "duplicate"
	ActionOtherGroup = "held out or another group's" // a split export's
	ActionMovedOut   = "moved to another group"      // a split export's, taken off this group's list as a leaver
)

// Explained is one contact's fate in a plan, for a preview. Row is 0 for
// a contact the file does not hold. JSON is the profile's JSON after its
// email (as in batches.jsonl) for an add or a change, and PrevHash the
// snapshot's hash for a change.
type Explained struct {
	Row      int
	Email    string
	Action   string
	Reason   string
	JSON     []byte
	PrevHash string
}

// Profile decodes an add's or a change's profile.
func (x Explained) Profile() (segment.Profile, error) {
	b := appendJSONEmail(nil, []byte(x.Email))
	b = append(b, x.JSON...)
	return decodeProfile(b)
}

// explain calls o.Explain, if set.
func (j *joiner) explain(x Explained) error {
	if j.explainFn == nil {
		return nil
	}
	return j.explainFn(x)
}

// decodeProfile decodes a profile's JSON as ReadBatch does (numbers kept
// as json.Number), so its Hash is the snapshot's.
func decodeProfile(b []byte) (segment.Profile, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var p segment.Profile
	err := dec.Decode(&p)
	return p, err
}
