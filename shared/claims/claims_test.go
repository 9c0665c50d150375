package claims_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/claims"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/store"
)

// fakeDest is a destination holding named objects in creation order, as
// Autopilot holds lists: it allows two objects with one name.
type fakeDest struct {
	mu      sync.Mutex
	objs    []fakeObj
	next    int
	finds   int
	creates int
}

type fakeObj struct{ id, name string }

func (d *fakeDest) add(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next++
	id := fmt.Sprintf("obj_%03d", d.next)
	d.objs = append(d.objs, fakeObj{id, name})
	return id
}

func (d *fakeDest) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.objs = slices.DeleteFunc(d.objs, func(o fakeObj) bool { return o.id == id })
}

func (d *fakeDest) named(name string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for _, o := range d.objs {
		if o.name == name {
			ids = append(ids, o.id)
		}
	}
	return ids
}

func (d *fakeDest) counts() (finds, creates int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.finds, d.creates
}

// objects is dest.Objects for one name; create, when set, replaces the
// plain creation (to die before or after it, or to block).
type objects struct {
	d      *fakeDest
	name   string
	create func(ctx context.Context) (string, error)
}

func (o objects) Find(context.Context) ([]string, error) {
	o.d.mu.Lock()
	o.d.finds++
	o.d.mu.Unlock()
	return o.d.named(o.name), nil
}

func (o objects) Create(ctx context.Context) (string, error) {
	o.d.mu.Lock()
	o.d.creates++
	o.d.mu.Unlock()
	if o.create != nil {
		return o.create(ctx)
	}
	return o.d.add(o.name), nil
}

var errDied = errors.New("the process died")

// diesAfterCreating creates the object, then fails before recording it.
func diesAfterCreating(d *fakeDest, name string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { d.add(name); return "", errDied }
}

func diesBeforeCreating(context.Context) (string, error) { return "", errDied }

const testLease = 200 * time.Millisecond

// registry is one process's Registry over the folder dir: each gets a
// store of its own, as separate processes would.
func registry(t *testing.T, dir, holder string, mod func(*claims.Options)) *claims.Registry {
	t.Helper()
	st, err := store.NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts := claims.Options{Holder: holder, Lease: testLease, Poll: 2 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	r, err := claims.New(st, "ap-main", opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// stored reads the claim object as JSON.
func stored(t *testing.T, dir, key string) map[string]any {
	t.Helper()
	st, err := store.NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var doc map[string]any
	if err := json.NewDecoder(body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestKey(t *testing.T) {
	t.Parallel()
	r := registry(t, t.TempDir(), "a", nil)
	sum := sha256.Sum256([]byte("Shared list"))
	if got, want := r.Key(dest.ObjectList, "Shared list"), "state/ap-main/lists/"+hex.EncodeToString(sum[:16])+".json"; got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	if got := r.Key(dest.ObjectField, "str:cm:tier"); !strings.HasPrefix(got, "state/ap-main/fields/") {
		t.Errorf("field key = %q", got)
	}
}

func TestNewRefusesBadConnectionNames(t *testing.T) {
	t.Parallel()
	st, err := store.NewFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", ".", "..", "a/b", `a\b`, "a\nb"} {
		if _, err := claims.New(st, name, claims.Options{}); err == nil {
			t.Errorf("New(%q) accepted", name)
		}
	}
	if _, err := claims.New(st, "ok", claims.Options{Lease: -1}); err == nil {
		t.Error("a negative lease was accepted")
	}
}

// TestResolve covers the protocol's steps one at a time: what the
// destination and the claim hold before, and what Resolve settles on.
func TestResolve(t *testing.T) {
	t.Parallel()
	const name = "Shared list"
	tests := []struct {
		name string
		// setup prepares the destination and the claim; it returns the id
		// Resolve must settle on ("" : a new one).
		setup       func(t *testing.T, d *fakeDest, dir string) (want string, others []string, replaced string)
		wantCreated bool
		wantGen     float64
	}{
		{name: "2: nothing yet: claims and creates", wantCreated: true, wantGen: 1,
			setup: func(*testing.T, *fakeDest, string) (string, []string, string) { return "", nil, "" }},
		{name: "1: made by hand: adopted and recorded", wantGen: 1,
			setup: func(_ *testing.T, d *fakeDest, _ string) (string, []string, string) {
				return d.add(name), nil, ""
			}},
		{name: "1: two made by hand: the oldest", wantGen: 1,
			setup: func(_ *testing.T, d *fakeDest, _ string) (string, []string, string) {
				a, b := d.add(name), d.add(name)
				return a, []string{b}, ""
			}},
		{name: "3: the recorded one beats an older one", wantGen: 1,
			setup: func(t *testing.T, d *fakeDest, dir string) (string, []string, string) {
				b := d.add(name)
				if _, err := registry(t, dir, "earlier run", nil).Resolve(context.Background(), dest.ObjectList, name, objects{d: d, name: name}); err != nil {
					t.Fatal(err)
				}
				d.mu.Lock()
				d.objs = append([]fakeObj{{"obj_000", name}}, d.objs...) // listed first
				d.mu.Unlock()
				return b, []string{"obj_000"}, ""
			}},
		{name: "5: recorded one deleted by hand: taken over and created", wantCreated: true, wantGen: 2,
			setup: func(t *testing.T, d *fakeDest, dir string) (string, []string, string) {
				res, err := registry(t, dir, "earlier run", nil).Resolve(context.Background(), dest.ObjectList, name, objects{d: d, name: name})
				if err != nil {
					t.Fatal(err)
				}
				d.remove(res.ID)
				return "", nil, res.ID
			}},
		{name: "4: recorded one deleted, another with the name: adopted", wantGen: 2,
			setup: func(t *testing.T, d *fakeDest, dir string) (string, []string, string) {
				res, err := registry(t, dir, "earlier run", nil).Resolve(context.Background(), dest.ObjectList, name, objects{d: d, name: name})
				if err != nil {
					t.Fatal(err)
				}
				d.remove(res.ID)
				return d.add(name), nil, res.ID
			}},
		{name: "6: holder died after creating: adopted without waiting", wantGen: 1,
			setup: func(t *testing.T, d *fakeDest, dir string) (string, []string, string) {
				_, err := registry(t, dir, "dead run", nil).Resolve(context.Background(), dest.ObjectList, name,
					objects{d: d, name: name, create: diesAfterCreating(d, name)})
				if !errors.Is(err, errDied) {
					t.Fatalf("the dying holder's Resolve = %v", err)
				}
				return d.named(name)[0], nil, ""
			}},
		{name: "7: holder died before creating: taken over after the lease", wantCreated: true, wantGen: 2,
			setup: func(t *testing.T, d *fakeDest, dir string) (string, []string, string) {
				_, err := registry(t, dir, "dead run", nil).Resolve(context.Background(), dest.ObjectList, name,
					objects{d: d, name: name, create: diesBeforeCreating})
				if !errors.Is(err, errDied) {
					t.Fatalf("the dying holder's Resolve = %v", err)
				}
				return "", nil, ""
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, dir := &fakeDest{}, t.TempDir()
			want, others, replaced := tt.setup(t, d, dir)
			_, createsBefore := d.counts()
			r := registry(t, dir, "this run", nil)
			start := time.Now()
			got, err := r.Resolve(context.Background(), dest.ObjectList, name, objects{d: d, name: name})
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if want == "" {
				want = d.named(name)[len(d.named(name))-1]
			}
			if got.ID != want || got.Created != tt.wantCreated || !slices.Equal(got.Others, others) || got.Replaced != replaced {
				t.Errorf("Resolve = %+v, want id %s created %v others %v replaced %q", got, want, tt.wantCreated, others, replaced)
			}
			if _, creates := d.counts(); creates-createsBefore != map[bool]int{true: 1}[tt.wantCreated] {
				t.Errorf("Create called %d times, want created=%v", creates-createsBefore, tt.wantCreated)
			}
			if strings.HasPrefix(tt.name, "7:") && took < testLease {
				t.Errorf("Resolve took %v, less than the lease (%v) it must wait before a takeover", took, testLease)
			}
			doc := stored(t, dir, r.Key(dest.ObjectList, name))
			if doc["id"] != want || doc["generation"] != tt.wantGen || doc["name"] != name || doc["connection"] != "ap-main" {
				t.Errorf("claim = %v, want id %s generation %v", doc, want, tt.wantGen)
			}
			if replaced != "" && fmt.Sprint(doc["replaced"]) != "["+replaced+"]" {
				t.Errorf("claim's replaced = %v, want [%s]", doc["replaced"], replaced)
			}
			// Asked again, it reads the claim: nothing new is made.
			again, err := r.Resolve(context.Background(), dest.ObjectList, name, objects{d: d, name: name})
			if err != nil || again.ID != want || again.Created || !again.Recorded {
				t.Errorf("second Resolve = %+v, %v", again, err)
			}
			if len(d.named(name)) != 1+len(others) {
				t.Errorf("the destination holds %v named %q", d.named(name), name)
			}
		})
	}
}

// TestResolveConcurrently: callers in separate "processes" (a Registry
// and a store each, one folder) resolving one name at the same moment
// create one object, and all settle on it.
func TestResolveConcurrently(t *testing.T) {
	t.Parallel()
	const callers, trials = 6, 20
	for trial := range trials {
		d, dir := &fakeDest{}, t.TempDir()
		regs := make([]*claims.Registry, callers)
		for i := range regs {
			regs[i] = registry(t, dir, fmt.Sprintf("run %d", i), nil)
		}
		ids := make([]string, callers)
		errs := make([]error, callers)
		startLine := make(chan struct{})
		var wg sync.WaitGroup
		for i, r := range regs {
			wg.Go(func() {
				<-startLine
				res, err := r.Resolve(context.Background(), dest.ObjectList, "Shared list", objects{d: d, name: "Shared list"})
				ids[i], errs[i] = res.ID, err
			})
		}
		close(startLine)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("trial %d: caller %d: %v", trial, i, err)
			}
		}
		if made := d.named("Shared list"); len(made) != 1 {
			t.Fatalf("trial %d: %d objects made: %v", trial, len(made), made)
		}
		for i, id := range ids {
			if id != ids[0] {
				t.Errorf("trial %d: caller %d settled on %s, caller 0 on %s", trial, i, id, ids[0])
			}
		}
	}
}

// TestResolveWaitsForALiveHolder: a caller finding a claim being worked on
// finds again until the holder's object appears, and creates nothing.
func TestResolveWaitsForALiveHolder(t *testing.T) {
	t.Parallel()
	d, dir := &fakeDest{}, t.TempDir()
	entered, release := make(chan struct{}), make(chan struct{})
	holder := objects{d: d, name: "VIP", create: func(context.Context) (string, error) {
		close(entered)
		<-release
		return d.add("VIP"), nil
	}}
	var held dest.Resolved
	var heldErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		held, heldErr = registry(t, dir, "holder", nil).Resolve(context.Background(), dest.ObjectList, "VIP", holder)
	})
	<-entered
	finds, _ := d.counts()
	var waited dest.Resolved
	var waitErr error
	wg.Go(func() {
		waited, waitErr = registry(t, dir, "waiter", func(o *claims.Options) { o.Lease = time.Hour }).
			Resolve(context.Background(), dest.ObjectList, "VIP", objects{d: d, name: "VIP"})
	})
	eventually(t, func() bool { f, _ := d.counts(); return f >= finds+3 }) // the waiter is finding again
	close(release)
	wg.Wait()
	if heldErr != nil || waitErr != nil {
		t.Fatalf("holder: %v; waiter: %v", heldErr, waitErr)
	}
	if _, creates := d.counts(); creates != 1 || held.ID != waited.ID || !held.Created || waited.Created {
		t.Errorf("holder %+v, waiter %+v, %d creates", held, waited, creates)
	}
}

// TestResolveGivesUp: past its wait, a caller stops with ErrInProgress,
// which callers retry.
func TestResolveGivesUp(t *testing.T) {
	t.Parallel()
	d, dir := &fakeDest{}, t.TempDir()
	if _, err := registry(t, dir, "dead run", nil).Resolve(context.Background(), dest.ObjectList, "VIP",
		objects{d: d, name: "VIP", create: diesBeforeCreating}); !errors.Is(err, errDied) {
		t.Fatal(err)
	}
	r := registry(t, dir, "this run", func(o *claims.Options) { o.Lease, o.Wait = time.Hour, 20*time.Millisecond })
	_, err := r.Resolve(context.Background(), dest.ObjectList, "VIP", objects{d: d, name: "VIP"})
	if !errors.Is(err, dest.ErrInProgress) || !dest.IsRetryable(err) || !strings.Contains(err.Error(), "dead run") {
		t.Errorf("Resolve = %v, want ErrInProgress naming the holder", err)
	}
	if _, creates := d.counts(); creates != 1 {
		t.Errorf("%d creates, want only the dead holder's", creates)
	}
}

// TestResolveKeepsAnUnreadableClaim: a claim that does not decode is an
// error, never overwritten.
func TestResolveKeepsAnUnreadableClaim(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := registry(t, dir, "this run", nil)
	key := r.Key(dest.ObjectList, "VIP")
	if _, err := st.Put(context.Background(), key, strings.NewReader("{not json"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	d := &fakeDest{}
	if _, err := r.Resolve(context.Background(), dest.ObjectList, "VIP", objects{d: d, name: "VIP"}); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("Resolve = %v, want an error naming %s", err, key)
	}
	body, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if raw, err := io.ReadAll(body); err != nil || string(raw) != "{not json" {
		t.Errorf("claim now %q, %v", raw, err)
	}
	if _, creates := d.counts(); creates != 0 {
		t.Errorf("%d creates", creates)
	}
}

// eventually polls cond until it holds, failing the test after 5 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// hookedStore runs afterPut after every successful Put, and fails a Put
// with failPut when set.
type hookedStore struct {
	store.ObjectStore
	afterPut func(opts store.PutOptions)
	failPut  error
}

func (h *hookedStore) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	if h.failPut != nil {
		return store.ObjectInfo{}, h.failPut
	}
	info, err := h.ObjectStore.Put(ctx, key, body, opts)
	if err == nil && h.afterPut != nil {
		h.afterPut(opts)
	}
	return info, err
}

// TestTakeoverFindsFirst: a holder thought dead whose creation lands just
// as its claim is taken over is found by the new holder, which creates
// nothing.
func TestTakeoverFindsFirst(t *testing.T) {
	t.Parallel()
	d, dir := &fakeDest{}, t.TempDir()
	if _, err := registry(t, dir, "slow run", nil).Resolve(context.Background(), dest.ObjectList, "VIP",
		objects{d: d, name: "VIP", create: diesBeforeCreating}); !errors.Is(err, errDied) {
		t.Fatal(err)
	}
	folder, err := store.NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	var late string
	st := &hookedStore{ObjectStore: folder, afterPut: func(opts store.PutOptions) {
		if opts.IfMatch != "" && late == "" { // the takeover
			late = d.add("VIP")
		}
	}}
	r, err := claims.New(st, "ap-main", claims.Options{Holder: "this run", Lease: testLease, Poll: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Resolve(context.Background(), dest.ObjectList, "VIP", objects{d: d, name: "VIP"})
	if err != nil || got.ID != late || got.Created {
		t.Errorf("Resolve = %+v, %v; want the late object %s", got, err, late)
	}
	if _, creates := d.counts(); creates != 1 {
		t.Errorf("%d creates, want only the slow holder's", creates)
	}
}

// TestResolveReturnsStoreErrors: a failed write is the caller's error,
// never read as a lost race, and nothing is created.
func TestResolveReturnsStoreErrors(t *testing.T) {
	t.Parallel()
	folder, err := store.NewFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	broken := errors.New("bucket unreachable")
	r, err := claims.New(&hookedStore{ObjectStore: folder, failPut: broken}, "ap-main", claims.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDest{}
	if _, err := r.Resolve(context.Background(), dest.ObjectList, "VIP", objects{d: d, name: "VIP"}); !errors.Is(err, broken) {
		t.Errorf("Resolve = %v, want the store's error", err)
	}
	if _, creates := d.counts(); creates != 0 {
		t.Errorf("%d creates without a claim", creates)
	}
}
