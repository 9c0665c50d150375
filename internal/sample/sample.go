// Package sample generates deterministic Customer-Insights-style segment
// files: the shipped example, test inputs, the soak and the benchmarks.
package sample

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Header is the sample's CSV header, as a Customer Insights export names it.
var Header = []string{"CustomerId", "EmailAddress", "FirstName", "LastName", "LoyaltyTier", "LifetimeOrders"}

// Options shape a file. Profile i is the same in every file of one seed
// unless Changed/Removed pick it, so two files differ by exactly those.
type Options struct {
	Rows    int    // profiles before removals and additions
	Seed    uint64 // fixes names, tiers and the picks below
	Invalid int    // every Invalid-th row is broken (bad email or order count); 0 = none
	Dupes   int    // every Dupes-th row repeats an earlier email in other case; 0 = none
	Changed int    // per 1000 profiles: a new loyalty tier
	Removed int    // per 1000 profiles: left out
	Added   int    // new profiles after the first Rows
}

var (
	firsts = []string{"Ana", "José", "Zoë", "Liam", "Mei", "Olu", "Sven", "Priya", "Jean-Luc", "Aiko", "Mateo", "Fatima", "Noah", "Ingrid", "Kwame", "Chloé"}
	lasts  = []string{"García", "Müller", "Smith", "Okafor", "Tanaka", "O'Brien", "Nguyen", "Kowalski", "Rossi", "Dubois", "Haddad", "Lindqvist", "Silva", "Chen", "Novak", "Ibrahim"}
	tiers  = []string{"bronze", "silver", "gold", "platinum"}
	broken = []string{"no-at-sign.example.com", "Jo <jo@example.com>", "two@@example.com", "spaces in@example.com", "", "nodot@localhost"}
)

// mix is a fast, well-spread hash of (seed, i, salt): splitmix64.
func mix(seed uint64, i, salt int) uint64 {
	z := seed + uint64(i)*0x9e3779b97f4a7c15 + uint64(salt)*0xbf58476d1ce4e5b9
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Email is profile i's address.
func Email(i int) string { return "customer" + strconv.Itoa(i) + "@example.com" }

// Write writes the CSV file and returns how many data rows it holds.
func Write(w io.Writer, o Options) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	rows := 0
	line := func(id, email, first, last, tier, orders string) {
		fmt.Fprintf(bw, "%s,%s,%s,%s,%s,%s\n", id, quote(email), quote(first), quote(last), tier, orders)
		rows++
	}
	fmt.Fprintf(bw, "%s,%s,%s,%s,%s,%s\n", Header[0], Header[1], Header[2], Header[3], Header[4], Header[5])
	for i := 1; i <= o.Rows+o.Added; i++ {
		if o.removed(i) {
			continue
		}
		h := mix(o.Seed, i, 0)
		first, last := firsts[h%uint64(len(firsts))], lasts[(h>>8)%uint64(len(lasts))]
		tier := tiers[(h>>16)%uint64(len(tiers))]
		if o.changed(i) {
			tier = tiers[((h>>16)+1)%uint64(len(tiers))]
		}
		orders := strconv.Itoa(int((h >> 24) % 200))
		email := Email(i)
		if o.invalid(i) {
			if i%(2*o.Invalid) == 0 {
				orders = "many"
			} else {
				email = broken[(i/o.Invalid)%len(broken)]
			}
		}
		line("CI-"+strconv.Itoa(100000+i), email, first, last, tier, orders)
		if o.Dupes > 0 && i%o.Dupes == 0 && i > 1 {
			// The same person again, email in upper case, later row wins.
			line("CI-"+strconv.Itoa(100000+i), upper(email), first, last, tier, orders)
		}
	}
	return rows, bw.Flush()
}

// removed, changed and invalid are the picks Write makes for profile i;
// DeltaOf reads the same ones, so the ground truth cannot drift from the file.
func (o Options) removed(i int) bool {
	return i <= o.Rows && o.Removed > 0 && int(mix(o.Seed, i, 1)%1000) < o.Removed
}

func (o Options) changed(i int) bool {
	return i <= o.Rows && o.Changed > 0 && int(mix(o.Seed, i, 2)%1000) < o.Changed
}

func (o Options) invalid(i int) bool { return o.Invalid > 0 && i%o.Invalid == 0 }

// Delta is the ground truth of how the file of o differs from the file of
// the same Seed, Rows, Invalid and Dupes without Changed, Removed and
// Added: the emails (as Email gives them) of the valid profiles changed,
// removed and added, in profile order. Delta tests compare the planner and
// what Autopilot received with it rather than with the planner's own counts.
type Delta struct {
	Changed, Removed, Added []string
}

// DeltaOf returns the Delta of o.
func DeltaOf(o Options) Delta {
	var d Delta
	for i := 1; i <= o.Rows+o.Added; i++ {
		switch {
		case o.invalid(i): // rejected in both files: never part of a delta
		case o.removed(i):
			d.Removed = append(d.Removed, Email(i))
		case o.changed(i):
			d.Changed = append(d.Changed, Email(i))
		case i > o.Rows:
			d.Added = append(d.Added, Email(i))
		}
	}
	return d
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func quote(s string) string {
	for _, c := range s {
		if c == ',' || c == '"' || c == '\n' {
			return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
		}
	}
	return s
}
