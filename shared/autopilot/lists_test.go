package autopilot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// listServer holds lists in memory; hangFirstPost makes the first POST /list
// apply and then hang, as a request that timed out but went through.
type listServer struct {
	mu            sync.Mutex
	lists         []map[string]string
	gets, posts   int
	hangFirstPost bool
}

func (s *listServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/lists", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.gets++
		body := map[string]any{"lists": append([]map[string]string(nil), s.lists...)}
		s.mu.Unlock()
		writeJSON(w, 200, body)
	})
	mux.HandleFunc("POST /v1/list", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeJSON(w, 400, map[string]string{"message": err.Error()})
			return
		}
		s.mu.Lock()
		s.posts++
		id := fmt.Sprintf("contactlist_%03d", len(s.lists)+1)
		s.lists = append(s.lists, map[string]string{"list_id": id, "title": body.Name})
		hangNow := s.hangFirstPost && s.posts == 1
		s.mu.Unlock()
		if hangNow {
			hang(w, r)
			return
		}
		writeJSON(w, 200, map[string]string{"list_id": id})
	})
	return mux
}

func (s *listServer) titled(title string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.lists {
		if l["title"] == title {
			n++
		}
	}
	return n
}

func TestEnsureList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		existing  []map[string]string
		hang      bool
		wantID    string
		wantPosts int
	}{
		{"creates when absent", []map[string]string{{"list_id": "contactlist_x", "title": "Other"}}, false, "contactlist_002", 1},
		{"finds existing", []map[string]string{{"list_id": "contactlist_b", "title": "VIP"}}, false, "contactlist_b", 0},
		{"first listed (oldest) of duplicates", []map[string]string{{"list_id": "contactlist_c", "title": "VIP"}, {"list_id": "contactlist_a", "title": "VIP"}, {"list_id": "contactlist_0", "title": "vip"}}, false, "contactlist_c", 0},
		{"hung then applied POST creates no duplicate", nil, true, "contactlist_001", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ls := &listServer{lists: tt.existing, hangFirstPost: tt.hang}
			h := newHarness(t, ls.handler(), func(o *Options) { o.Timeout = 200 * time.Millisecond })
			id, err := h.c.EnsureList(context.Background(), "VIP")
			if err != nil {
				t.Fatal(err)
			}
			if id != tt.wantID {
				t.Errorf("id = %q, want %q", id, tt.wantID)
			}
			ls.mu.Lock()
			gets := ls.gets
			ls.mu.Unlock()
			if tt.hang && gets != 2 {
				t.Errorf("GET /lists sent %d times, want 2 (before creating and before retrying)", gets)
			}
			if !tt.hang && gets != 1 {
				t.Errorf("GET /lists sent %d times, want 1", gets)
			}
			// Called again, it finds the list it made: no second one.
			again, err := h.c.EnsureList(context.Background(), "VIP")
			if err != nil || again != id {
				t.Errorf("second EnsureList = %q, %v", again, err)
			}
			ls.mu.Lock()
			posts := ls.posts
			ls.mu.Unlock()
			if posts != tt.wantPosts {
				t.Errorf("POST /list sent %d times, want %d", posts, tt.wantPosts)
			}
			if tt.wantPosts > 0 && ls.titled("VIP") != 1 {
				t.Errorf("%d lists titled VIP, want 1", ls.titled("VIP"))
			}
		})
	}
}
