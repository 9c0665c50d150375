package ortto

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/claims"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/store"
)

// spoilFirst passes requests to next, except the first to path: that one
// is applied and answered 502, as a gateway that lost the answer would.
type spoilFirst struct {
	next http.Handler
	path string
	mu   sync.Mutex
	done bool
}

func (h *spoilFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	first := !h.done && r.URL.Path == h.path
	h.done = h.done || first
	h.mu.Unlock()
	if !first {
		h.next.ServeHTTP(w, r)
		return
	}
	h.next.ServeHTTP(httptest.NewRecorder(), r)
	http.Error(w, `{"error":{"message":"bad gateway"}}`, http.StatusBadGateway)
}

// gateFieldLists holds the first n custom-field/get until all n arrived,
// so n exports find a field missing at the same moment.
type gateFieldLists struct {
	next    http.Handler
	mu      sync.Mutex
	n, seen int
	all     chan struct{}
}

func (g *gateFieldLists) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/custom-field/get") {
		g.mu.Lock()
		g.seen++
		held := g.seen <= g.n
		if g.seen == g.n {
			close(g.all)
		}
		g.mu.Unlock()
		if held {
			select {
			case <-g.all:
			case <-r.Context().Done():
				return
			}
		}
	}
	g.next.ServeHTTP(w, r)
}

func fieldRegistry(t *testing.T, bucket, holder string) *claims.Registry {
	t.Helper()
	// No holder here dies: a long lease keeps a slow machine from cutting
	// a creation short.
	return fieldRegistryWith(t, bucket, claims.Options{Holder: holder, Lease: time.Minute, Poll: 5 * time.Millisecond})
}

func fieldRegistryWith(t *testing.T, bucket string, opts claims.Options) *claims.Registry {
	t.Helper()
	st, err := store.NewFolder(bucket)
	if err != nil {
		t.Fatal(err)
	}
	r, err := claims.New(st, "ortto-main", opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var tierSpec = dest.ListSpec{Title: "VIP", CreateFields: true, Fields: []dest.Field{{Key: "str:cm:tier", Type: dest.String}}}

// TestFieldCreatedOnceBySharingExports: two exports in two processes find
// a custom field missing at the same moment; both prepare, one creates.
func TestFieldCreatedOnceBySharingExports(t *testing.T) {
	t.Parallel()
	for trial := range 10 {
		s := sim.New(sim.Options{APIKey: testKey})
		srv := httptest.NewServer(&gateFieldLists{next: s, n: 2, all: make(chan struct{})})
		bucket := t.TempDir()
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range errs {
			c := newClient(t, srv, testKey)
			spec := tierSpec
			spec.Registry = fieldRegistry(t, bucket, []string{"export a", "export b"}[i])
			wg.Go(func() { _, errs[i] = c.PrepareList(context.Background(), spec) })
		}
		wg.Wait()
		srv.Close()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("trial %d: %v; %v", trial, errs[0], errs[1])
		}
		if fields := s.Dump().Fields; len(fields) != 1 || fields[0].ID != "str:cm:tier" {
			t.Fatalf("trial %d: Ortto holds %+v", trial, fields)
		}
	}
}

// TestFieldCreateAppliedButUnanswered: a custom-field/create that went
// through but was answered 502 is found by the check before the retry,
// not sent again (Ortto would refuse the name as taken).
func TestFieldCreateAppliedButUnanswered(t *testing.T) {
	t.Parallel()
	for _, withRegistry := range []bool{false, true} {
		s := sim.New(sim.Options{APIKey: testKey})
		srv := httptest.NewServer(&spoilFirst{next: s, path: "/v1/person/custom-field/create"})
		t.Cleanup(srv.Close)
		spec := tierSpec
		if withRegistry {
			spec.Registry = fieldRegistry(t, t.TempDir(), "export")
		}
		if _, err := newClient(t, srv, testKey).PrepareList(context.Background(), spec); err != nil {
			t.Fatalf("registry %v: %v", withRegistry, err)
		}
		if fields := s.Dump().Fields; len(fields) != 1 || fields[0].ID != "str:cm:tier" {
			t.Errorf("registry %v: Ortto holds %+v", withRegistry, fields)
		}
	}
}

// afterFirstList runs then once, after the first custom-field/get has
// been answered.
type afterFirstList struct {
	next http.Handler
	then func()
	once sync.Once
}

func (h *afterFirstList) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.next.ServeHTTP(w, r)
	if strings.HasSuffix(r.URL.Path, "/custom-field/get") {
		h.once.Do(h.then)
	}
}

// TestFieldOfAnotherTypeIsAConfigError: a field with the name but another
// type is the export's to fix, found in the first listing or made by
// someone else just after it, and never leaves the claim held (a later
// run says the same).
func TestFieldOfAnotherTypeIsAConfigError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		beforehand bool // the other field exists before the run, else it appears after the first listing
		want       string
	}{
		{"there before", true, "and int:cm:tier has its name"},
		{"made meanwhile", false, "Ortto's field named \"Tier\" is int:cm:tier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := sim.New(sim.Options{APIKey: testKey})
			other := func() {
				if _, err := s.CreateField("Tier", "integer"); err != nil {
					t.Error(err)
				}
			}
			var h http.Handler = s
			if tt.beforehand {
				other()
			} else {
				h = &afterFirstList{next: s, then: other}
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			spec := tierSpec
			// A claim left held would make the second run wait, and give up
			// at once with ErrInProgress instead of the ConfigError.
			spec.Registry = fieldRegistryWith(t, t.TempDir(), claims.Options{Lease: time.Hour, Wait: time.Millisecond})
			for run := range 2 {
				_, err := newClient(t, srv, testKey).PrepareList(context.Background(), spec)
				var ce *dest.ConfigError
				if !errors.As(err, &ce) || (run == 0 && !strings.Contains(err.Error(), tt.want)) {
					t.Errorf("run %d: err = %v, want a ConfigError saying %q", run, err, tt.want)
				}
			}
			if fields := s.Dump().Fields; len(fields) != 1 {
				t.Errorf("Ortto holds %+v", fields)
			}
		})
	}
}
