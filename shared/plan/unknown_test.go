package plan

import "testing"

// A contact whose state is unknown (its delivery's outcome was not seen)
// is sent again by the next plan whatever the file says: changed if the
// file holds it, even as it was; a leaver if not.
func TestUnknownContactsAreSentAgain(t *testing.T) {
	t.Parallel()
	a, b := prof("a@example.com", "Ada", 1), prof("b@example.com", "Bo", 2)
	snapshot := "a@example.com\t" + Hash(a) + "\nb@example.com\t" + UnknownHash + "\nc@example.com\t" + UnknownHash + "\n"
	p, _, err := build(t, []row{{p: a}, {p: b}}, snapshot, Options{Mode: ModeMirror, AllowLargeRemoval: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Counts; c.Unchanged != 1 || c.Changed != 1 || c.Removed != 1 {
		t.Fatalf("counts %+v; want a unchanged, b changed (sent again), c removed", c)
	}
}
