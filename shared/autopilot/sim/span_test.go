package sim_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

// TestCountersSpan: the span runs from the first request to the last.
func TestCountersSpan(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Options{APIKey: "k"})
	srv := httptest.NewServer(s)
	defer srv.Close()
	start := time.Now()
	for i := range 2 {
		if i > 0 {
			time.Sleep(20 * time.Millisecond) // the span to measure
		}
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/account", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("autopilotapikey", "k")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if span := s.Counters().Span; span < 20*time.Millisecond || span > time.Since(start) {
		t.Fatalf("span %v: want from the first request to the second, 20 ms or more apart", span)
	}
}
