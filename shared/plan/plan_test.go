package plan

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/segment"
)

// row is one input row: a valid profile, or a rejection when reason is set.
type row struct {
	p      segment.Profile
	reason string
}

func prof(email, first string, orders int64) segment.Profile {
	return segment.Profile{
		Email:     email,
		FirstName: first,
		Custom:    segment.CustomOf(map[string]any{"string--Loyalty--Tier": "gold", "integer--Orders": orders}),
	}
}

func email(i int) string { return fmt.Sprintf("u%05d@example.com", i) }

func profiles(n int) []row {
	rows := make([]row, n)
	for i := range rows {
		rows[i] = row{p: prof(email(i), "F", int64(i))}
	}
	return rows
}

// source replays rows as a Source; rows are numbered from 1.
func source(rows []row) Source {
	return func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		var st segment.Stats
		for i, r := range rows {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			st.Rows++
			if r.reason != "" {
				st.Rejected++
				if err := reject(segment.Rejection{Row: i + 1, Email: r.p.Email, Reason: r.reason}); err != nil {
					return st, err
				}
				continue
			}
			st.Valid++
			if err := emit(segment.Record{Row: i + 1, Profile: r.p}); err != nil {
				return st, err
			}
		}
		return st, nil
	}
}

// snapshotOf builds a snapshot holding these profiles' current hashes.
func snapshotOf(ps ...segment.Profile) string {
	lines := make([]string, 0, len(ps))
	for _, p := range ps {
		lines = append(lines, p.Email+"\t"+Hash(p)+"\n")
	}
	sort.Strings(lines)
	return strings.Join(lines, "")
}

func profs(rows []row) []segment.Profile {
	var ps []segment.Profile
	for _, r := range rows {
		if r.reason == "" {
			ps = append(ps, r.p)
		}
	}
	return ps
}

// result is a plan read back from disk, checked for structural rules.
type result struct {
	upserts  []Upsert
	removals []string
	snapshot string
	rejected [][]string
}

func readBack(t *testing.T, dir string, p *Plan, batchSize int) result {
	t.Helper()
	var res result
	if p.Files.Batches != BatchesFile {
		t.Fatalf("plan files %+v; want the batches in %s", p.Files, BatchesFile)
	}
	all, err := os.ReadFile(filepath.Join(dir, p.Files.Batches))
	if err != nil {
		t.Fatal(err)
	}
	var next int64 // the batches are the file's lines, back to back
	for i, ref := range p.Batches {
		if ref.Seq != i+1 || ref.Offset != next || ref.Length < 2 || ref.Offset+ref.Length > int64(len(all)) {
			t.Fatalf("batch %d: ref %+v, want seq %d at offset %d of the %d-byte file", i, ref, i+1, next, len(all))
		}
		next += ref.Length
		raw := all[ref.Offset : ref.Offset+ref.Length]
		if raw[len(raw)-1] != '\n' || bytes.Count(raw, []byte("\n")) != 1 {
			t.Fatalf("batch %d: %q is not one line", ref.Seq, raw)
		}
		if sum := crc32.Checksum(raw, crc32.MakeTable(crc32.Castagnoli)); base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum)) != ref.CRC32C {
			t.Fatalf("batch %d: crc32c mismatch", ref.Seq)
		}
		b, err := ReadBatch(raw)
		if err != nil {
			t.Fatalf("batch %d: %v", ref.Seq, err)
		}
		if b.Seq != ref.Seq || len(b.Upserts) != ref.Upserts || len(b.Removals) != ref.Removals {
			t.Fatalf("batch %d: content %d/%d does not match ref %+v", ref.Seq, len(b.Upserts), len(b.Removals), ref)
		}
		if (len(b.Upserts) == 0) == (len(b.Removals) == 0) {
			t.Fatalf("batch %d: want upserts xor removals", ref.Seq)
		}
		if len(b.Upserts) > batchSize || len(b.Removals) > batchSize {
			t.Fatalf("batch %d: larger than %d", ref.Seq, batchSize)
		}
		if len(b.Upserts) > 0 && len(res.removals) > 0 {
			t.Fatalf("batch %d: upserts after removal batches", ref.Seq)
		}
		res.upserts = append(res.upserts, b.Upserts...)
		res.removals = append(res.removals, b.Removals...)
	}
	if next != int64(len(all)) {
		t.Fatalf("the index covers %d of the %d bytes of %s", next, len(all), p.Files.Batches)
	}
	if !slices.IsSortedFunc(res.upserts, func(a, b Upsert) int { return strings.Compare(a.Profile.Email, b.Profile.Email) }) {
		t.Error("upserts not in email order")
	}
	snap, err := os.ReadFile(filepath.Join(dir, p.Files.Snapshot))
	if err != nil {
		t.Fatal(err)
	}
	res.snapshot = string(snap)
	// what syncbatch decodes must hash as the snapshot says it was planned
	planned := map[string]string{}
	for line := range strings.Lines(res.snapshot) {
		email, hash, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		planned[email] = hash
	}
	for _, u := range res.upserts {
		if got := Hash(u.Profile); got != planned[u.Profile.Email] {
			t.Fatalf("upsert %s: Hash of the decoded profile %s, snapshot %q", u.Profile.Email, got, planned[u.Profile.Email])
		}
	}
	f, err := os.Open(filepath.Join(dir, p.Files.Rejected))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if res.rejected, err = csv.NewReader(f).ReadAll(); err != nil {
		t.Fatal(err)
	}
	// The header says what a row number counts: it is not the file's line.
	if len(res.rejected) == 0 || strings.Join(res.rejected[0], ",") != "row (data row: 1 = first after the header),email,reason" {
		t.Fatalf("rejected.csv header: %v", res.rejected)
	}
	res.rejected = res.rejected[1:]
	c := p.Counts
	if c.Rows != c.Valid+c.Rejected || c.Valid != c.Unique+c.Duplicates || c.Unique != c.Added+c.Changed+c.Unchanged {
		t.Errorf("count invariants broken: %+v", c)
	}
	if len(res.upserts) != c.Added+c.Changed+c.Resent || len(res.removals) != c.Removed {
		t.Errorf("batches hold %d upserts, %d removals; counts %+v", len(res.upserts), len(res.removals), c)
	}
	return res
}

func build(t *testing.T, rows []row, snapshot string, opts Options) (*Plan, string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	tmp := t.TempDir()
	opts.TempDir = tmp
	var snap *strings.Reader
	if snapshot != "" {
		snap = strings.NewReader(snapshot)
	}
	var p *Plan
	var err error
	if snap == nil {
		p, err = Build(context.Background(), source(rows), nil, dir, opts)
	} else {
		p, err = Build(context.Background(), source(rows), snap, dir, opts)
	}
	if left, rerr := os.ReadDir(tmp); rerr != nil || len(left) != 0 {
		t.Fatalf("spill folder not cleaned: %v %v", left, rerr)
	}
	return p, dir, err
}

func TestBuildDiffs(t *testing.T) {
	t.Parallel()
	base := profiles(250)
	big := profiles(20000)
	changed := slices.Clone(big)
	for i := 0; i < len(changed); i += 100 { // 1%: 200 profiles
		changed[i] = row{p: prof(email(i), "Changed", int64(i))}
	}
	dup := []row{
		{p: prof("a@example.com", "Old", 1)},
		{p: prof("b@example.com", "B", 2)},
		{p: prof("a@example.com", "Mid", 1)},
		{p: prof("c@example.com", "C", 3)},
		{p: prof("a@example.com", "New", 1)},
	}
	ten := profiles(10)
	withRejects := append(profiles(3), row{p: segment.Profile{Email: "=cmd()@x"}, reason: "invalid email"}, row{p: segment.Profile{Email: "x"}, reason: "-bad"})

	tests := []struct {
		name     string
		rows     []row
		snapshot string
		opts     Options
		want     Counts
		batches  int
		held     string // substring of HeldReason; "" means not held
		check    func(t *testing.T, r result)
	}{
		{
			name: "first run", rows: base, opts: Options{Mode: ModeUpsert},
			want: Counts{Rows: 250, Valid: 250, Unique: 250, Added: 250}, batches: 3,
			check: func(t *testing.T, r result) {
				if r.snapshot != snapshotOf(profs(base)...) {
					t.Error("snapshot does not list every profile")
				}
			},
		},
		{
			name: "unchanged rerun", rows: base, snapshot: snapshotOf(profs(base)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2},
			want: Counts{Rows: 250, Valid: 250, Unique: 250, Unchanged: 250, Previous: 250}, batches: 0,
		},
		{
			name: "full resync: unchanged contacts sent all the same, leavers as ever", rows: base[:200], snapshot: snapshotOf(profs(base)...),
			opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.5, FullResync: true},
			want: Counts{Rows: 200, Valid: 200, Unique: 200, Unchanged: 200, Resent: 200, Removed: 50, Previous: 250}, batches: 3,
			check: func(t *testing.T, r result) {
				if len(r.upserts) != 200 || len(r.removals) != 50 {
					t.Errorf("%d upserts, %d removals; want every contact of the file, and the 50 leavers", len(r.upserts), len(r.removals))
				}
			},
		},
		{
			name: "one percent changed", rows: changed, snapshot: snapshotOf(profs(big)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2, ChunkRecords: 3000},
			want: Counts{Rows: 20000, Valid: 20000, Unique: 20000, Changed: 200, Unchanged: 19800, Previous: 20000}, batches: 2,
			check: func(t *testing.T, r result) {
				for _, u := range r.upserts {
					if u.Profile.FirstName != "Changed" {
						t.Fatalf("unchanged profile %s in batches", u.Profile.Email)
					}
				}
			},
		},
		{
			name: "duplicates in different rows", rows: dup, opts: Options{Mode: ModeUpsert, ChunkRecords: 2},
			want: Counts{Rows: 5, Valid: 5, Duplicates: 2, Unique: 3, Added: 3}, batches: 1,
			check: func(t *testing.T, r result) {
				if u := r.upserts[0]; u.Profile.Email != "a@example.com" || u.Row != 5 || u.Profile.FirstName != "New" {
					t.Errorf("last row should win, got %+v", u)
				}
				// Every row not sent is listed: the dropped ones name the winner.
				want := [][]string{{"3", "a@example.com", "duplicate of row 5"}, {"1", "a@example.com", "duplicate of row 5"}}
				if fmt.Sprint(r.rejected) != fmt.Sprint(want) {
					t.Errorf("rejected.csv rows %q, want %q", r.rejected, want)
				}
			},
		},
		{
			name: "mirror removes leavers", rows: ten[:9], snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2},
			want: Counts{Rows: 9, Valid: 9, Unique: 9, Unchanged: 9, Removed: 1, Previous: 10}, batches: 1,
			check: func(t *testing.T, r result) {
				if !slices.Equal(r.removals, []string{email(9)}) {
					t.Errorf("removals %v", r.removals)
				}
				if strings.Contains(r.snapshot, email(9)) {
					t.Error("mirror snapshot still holds the leaver")
				}
			},
		},
		{
			name: "upsert carries leavers", rows: ten[1:], snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeUpsert},
			want: Counts{Rows: 9, Valid: 9, Unique: 9, Unchanged: 9, Previous: 10}, batches: 0,
			check: func(t *testing.T, r result) {
				if r.snapshot != snapshotOf(profs(ten)...) {
					t.Errorf("upsert snapshot should carry the leaver:\n%s", r.snapshot)
				}
			},
		},
		{
			name: "brake holds large removal", rows: ten[:7], snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2},
			want: Counts{Rows: 7, Valid: 7, Unique: 7, Unchanged: 7, Removed: 3, Previous: 10}, batches: 1,
			held: "would remove 3 of 10 contacts (30%), above maxRemovalShare 20%",
		},
		{
			// Churn: half the list leaves while as many join. The share is
			// of leavers, not of the net change, which is nil here.
			name: "brake counts leavers, not the net change", rows: profiles(15)[5:], snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2},
			want: Counts{Rows: 10, Valid: 10, Unique: 10, Added: 5, Unchanged: 5, Removed: 5, Previous: 10}, batches: 2,
			held: "would remove 5 of 10 contacts (50%), above maxRemovalShare 20%",
		},
		{
			name: "brake holds empty file", rows: nil, snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2},
			want: Counts{Removed: 10, Previous: 10}, batches: 1,
			held: "no valid profiles",
		},
		{
			name: "allowLargeRemoval releases the brake", rows: nil, snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeMirror, MaxRemovalShare: 0.2, AllowLargeRemoval: true, BatchSize: 4},
			want: Counts{Removed: 10, Previous: 10}, batches: 3,
		},
		{
			name: "upsert mode never holds", rows: nil, snapshot: snapshotOf(profs(ten)...), opts: Options{Mode: ModeUpsert, MaxRemovalShare: 0.2},
			want: Counts{Previous: 10}, batches: 0,
		},
		{
			name: "duplicates keep a segment under maxProfiles", rows: dup, opts: Options{Mode: ModeUpsert, MaxProfiles: 3},
			want: Counts{Rows: 5, Valid: 5, Duplicates: 2, Unique: 3, Added: 3}, batches: 1,
		},
		{
			name: "rejections are listed formula-safe", rows: withRejects, opts: Options{Mode: ModeUpsert},
			want: Counts{Rows: 5, Valid: 3, Rejected: 2, Unique: 3, Added: 3}, batches: 1,
			check: func(t *testing.T, r result) {
				want := [][]string{{"4", "'=cmd()@x", "invalid email"}, {"5", "x", "'-bad"}}
				if fmt.Sprint(r.rejected) != fmt.Sprint(want) {
					t.Errorf("rejected.csv rows %q, want %q", r.rejected, want)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, dir, err := build(t, tc.rows, tc.snapshot, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if p.Counts != tc.want {
				t.Errorf("counts\n got %+v\nwant %+v", p.Counts, tc.want)
			}
			if len(p.Batches) != tc.batches {
				t.Errorf("%d batches, want %d", len(p.Batches), tc.batches)
			}
			if p.Held != (tc.held != "") || !strings.Contains(p.HeldReason, tc.held) {
				t.Errorf("held %v %q, want %q", p.Held, p.HeldReason, tc.held)
			}
			size := tc.opts.BatchSize
			if size == 0 {
				size = DefaultBatchSize
			}
			r := readBack(t, dir, p, size)
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestBuildLimitWritesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		rows   []row
		max    int
		unique int
	}{
		{"more valid rows than allowed", profiles(6), 5, 6},
		{"limit found after dedupe", append(profiles(6), profiles(2)...), 5, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, dir, err := build(t, tc.rows, "", Options{Mode: ModeMirror, MaxProfiles: tc.max, ChunkRecords: 3})
			var le *LimitError
			if !errors.As(err, &le) || le.Counts.Unique != tc.unique || le.Max != tc.max || p != nil {
				t.Fatalf("got %v, %v; want LimitError{%d, %d}", p, err, tc.unique, tc.max)
			}
			// What was read, for the report: every row valid here.
			n := len(tc.rows)
			if want := (Counts{Rows: n, Valid: n, Duplicates: n - tc.unique, Unique: tc.unique}); le.Counts != want {
				t.Errorf("counts %+v; want %+v", le.Counts, want)
			}
			want := fmt.Sprintf("segment has %d profiles, above maxProfiles %d; raise maxProfiles for this export or split the segment", tc.unique, tc.max)
			if err.Error() != want {
				t.Errorf("message %q", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("outDir was created: %v", err)
			}
		})
	}
}

func TestBuildOptionsErrors(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{{Mode: "sync"}, {Mode: ModeUpsert, BatchSize: 101}, {Mode: ModeMirror, MaxRemovalShare: 1.5}, {Mode: ModeUpsert, MaxProfiles: -1}} {
		if _, _, err := build(t, profiles(1), "", o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

func TestBuildBadSnapshot(t *testing.T) {
	t.Parallel()
	for _, snap := range []string{"b@x\th1\na@x\th2\n", "a@x\th1\na@x\th2\n", "no-tab\n"} {
		dir := filepath.Join(t.TempDir(), "out")
		_, err := Build(context.Background(), source(profiles(3)), strings.NewReader(snap), dir, Options{Mode: ModeUpsert, TempDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "snapshot line") {
			t.Errorf("snapshot %q: err %v", snap, err)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("snapshot %q: partial output left: %v", snap, left)
		}
	}
}

func TestBuildCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	rows := profiles(5000)
	src := func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		for i, r := range rows {
			if i == 3000 {
				cancel()
			}
			if err := ctx.Err(); err != nil {
				return segment.Stats{}, err
			}
			if err := emit(segment.Record{Row: i + 1, Profile: r.p}); err != nil {
				return segment.Stats{}, err
			}
		}
		return segment.Stats{}, nil
	}
	tmp := t.TempDir()
	_, err := Build(ctx, src, nil, filepath.Join(t.TempDir(), "out"), Options{Mode: ModeUpsert, TempDir: tmp, ChunkRecords: 500})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("spill files left: %v", left)
	}
}

func TestBuildSourceAndSinkErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	src := func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		if err := emit(segment.Record{Row: 1, Profile: prof("a@x", "", 1)}); err != nil {
			return segment.Stats{}, err
		}
		return segment.Stats{}, boom
	}
	if _, err := Build(context.Background(), src, nil, filepath.Join(t.TempDir(), "o"), Options{Mode: ModeUpsert, TempDir: t.TempDir()}); !errors.Is(err, boom) {
		t.Errorf("source error lost: %v", err)
	}
	bad := []row{{p: segment.Profile{Email: "a@x", Custom: segment.CustomOf(map[string]any{"float--X": math.NaN()})}}}
	if _, _, err := build(t, bad, "", Options{Mode: ModeUpsert}); err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Errorf("unencodable profile: %v", err)
	}
}
