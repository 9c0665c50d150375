package sim_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

// TestJitterDelaysBeforeTheRateLimit: a jittered request reaches the rate
// limit late, by a different random delay each, all below the bound.
func TestJitterDelaysBeforeTheRateLimit(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Options{APIKey: "k", Faults: sim.Faults{Jitter: 30 * time.Millisecond}, Seed: 3})
	srv := httptest.NewServer(s)
	defer srv.Close()
	var took []time.Duration
	for range 20 {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/account", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("autopilotapikey", "k")
		start := time.Now()
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if took[len(took)-1]-took[0] < 5*time.Millisecond {
		t.Fatalf("20 jittered requests took %v…%v: no spread", took[0], took[len(took)-1])
	}
}
