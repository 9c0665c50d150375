// Package split divides a segment into named groups by percentage, stably:
// a contact's group is decided by a bucket, a hash of the export's salt
// and its email, and an Allocation says which group owns each bucket. A
// new set of percentages evolves the allocation by moving only the
// buckets of the groups that shrank to the groups that grew, so the fewest
// contacts change group; a contact never changes group while the
// percentages (and the salt) stay.
package split

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Buckets is how finely contacts are split: a group's share is a whole
// number of buckets, 0.01 % each.
const Buckets = 10000

// Group is one group and its share, in buckets (45 % is 4500).
type Group struct {
	Name  string `json:"name"`
	Share int    `json:"share"`
}

// Allocation says which group owns each bucket.
type Allocation struct {
	Salt   string  `json:"salt"`
	Groups []Group `json:"groups"`
	// Owner holds, for each bucket, the index of its group in Groups.
	Owner []byte `json:"owner"`
}

// Bucket is the bucket of a (normalised) email under salt.
func Bucket(salt string, email []byte) int {
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write(email)
	var sum [sha256.Size]byte
	return int(binary.BigEndian.Uint64(h.Sum(sum[:0])) % Buckets)
}

// New is the first allocation of groups: consecutive ranges of buckets in
// the groups' order.
func New(salt string, groups []Group) (Allocation, error) {
	if err := check(groups); err != nil {
		return Allocation{}, err
	}
	a := Allocation{Salt: salt, Groups: slices.Clone(groups), Owner: make([]byte, Buckets)}
	b := 0
	for i, g := range groups {
		for range g.Share {
			a.Owner[b] = byte(i)
			b++
		}
	}
	return a, nil
}

func check(groups []Group) error {
	if len(groups) == 0 || len(groups) > 255 {
		return fmt.Errorf("split: %d groups, want 1 to 255", len(groups))
	}
	total := 0
	for _, g := range groups {
		if g.Share <= 0 {
			return fmt.Errorf("split: group %s has no share", g.Name)
		}
		total += g.Share
	}
	if total != Buckets {
		return fmt.Errorf("split: the groups' shares add up to %d buckets, want %d", total, Buckets)
	}
	return nil
}

// Same says whether a was made for salt and groups.
func (a Allocation) Same(salt string, groups []Group) bool {
	return a.Salt == salt && slices.Equal(a.Groups, groups)
}

// Evolve returns the allocation for salt and groups that moves the fewest
// buckets from a: a group keeps its buckets up to its new share (its
// lowest ones), and the buckets freed (a group's surplus, a removed
// group's) go, lowest first, to the groups short of their share, in their
// order. A new salt starts afresh: every contact's bucket changes anyway.
func (a Allocation) Evolve(salt string, groups []Group) (Allocation, error) {
	if a.Salt != salt || len(a.Owner) != Buckets {
		return New(salt, groups)
	}
	if err := check(groups); err != nil {
		return Allocation{}, err
	}
	const free = 255
	index := map[string]int{}
	for i, g := range groups {
		index[g.Name] = i
	}
	next := Allocation{Salt: salt, Groups: slices.Clone(groups), Owner: make([]byte, Buckets)}
	held := make([]int, len(groups))
	for b, o := range a.Owner {
		next.Owner[b] = free
		if int(o) >= len(a.Groups) {
			continue
		}
		if i, ok := index[a.Groups[o].Name]; ok && held[i] < groups[i].Share {
			next.Owner[b] = byte(i)
			held[i]++
		}
	}
	g := 0
	for b := range next.Owner {
		if next.Owner[b] != free {
			continue
		}
		for held[g] == groups[g].Share {
			g++
		}
		next.Owner[b] = byte(g)
		held[g]++
	}
	return next, nil
}

// GroupOf returns the group email belongs to.
func (a Allocation) GroupOf(email []byte) string {
	return a.Groups[a.Owner[Bucket(a.Salt, email)]].Name
}

// Moves describes how many buckets (hundredths of a percent of contacts)
// change group from a to next, by pair: "a → b 5.00 %".
func Moves(a, next Allocation) (total int, pairs []string) {
	if len(a.Owner) != Buckets || a.Salt != next.Salt {
		return Buckets, []string{"every contact is split afresh (a new salt, or no split before)"}
	}
	count := map[[2]string]int{}
	for b := range Buckets {
		from, to := a.Groups[a.Owner[b]].Name, next.Groups[next.Owner[b]].Name
		if from != to {
			count[[2]string{from, to}]++
			total++
		}
	}
	keys := make([][2]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y [2]string) int { return strings.Compare(x[0]+"\x00"+x[1], y[0]+"\x00"+y[1]) })
	for _, k := range keys {
		pairs = append(pairs, fmt.Sprintf("%s → %s %s", k[0], k[1], Percent(count[k])))
	}
	return total, pairs
}

// Percent writes a number of buckets as a percentage: 450 is "4.50 %".
func Percent(buckets int) string {
	return fmt.Sprintf("%d.%02d %%", buckets/100, buckets%100)
}
