package dest

import "context"

// ObjectKind is the kind of destination object a Registry claims.
type ObjectKind string

// The objects adapters create.
const (
	ObjectList  ObjectKind = "list"  // an Autopilot list, named by its title
	ObjectField ObjectKind = "field" // an Ortto custom field, named by its id
)

// Objects is how a Registry sees the destination's objects of one kind
// and name; an adapter implements it for each object it may create.
type Objects interface {
	// Find returns the ids of the destination's objects with the name,
	// oldest first. It is a real request, answered by the destination.
	Find(ctx context.Context) ([]string, error)
	// Create makes one object with the name and returns its id. A
	// Registry calls it only while holding the name's claim, after a Find
	// that found none; ctx ends when the claim's lease does.
	Create(ctx context.Context) (string, error)
}

// Resolved is the object a Registry settled on.
type Resolved struct {
	ID       string
	Created  bool // this call created it
	Recorded bool // the registry had recorded it (not merely the oldest found)
	// Others are the destination's other objects with the name, oldest
	// first: left alone, never to be sent to.
	Others []string
	// Replaced is the id recorded before, which the destination no longer
	// lists (deleted by hand, or the key now opens another account).
	Replaced string
}

// Registry records the objects adapters create in a destination, for
// every run and process of one connection, so that each is created once:
// a name is claimed before its object is created, and every other caller
// reads the claim instead of creating. shared/claims keeps claims in the
// bucket.
type Registry interface {
	// Resolve returns the object of kind named name: the one recorded when
	// the destination still lists it, else the oldest it lists, else one
	// created through objects by the only caller holding the claim. It
	// calls objects.Find at least once. While another caller holds the
	// claim and has not recorded an id, it waits, finding; past its wait
	// it returns an error matching ErrInProgress.
	Resolve(ctx context.Context, kind ObjectKind, name string, objects Objects) (Resolved, error)
}
