package sim_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

func TestParseFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		spec    string
		want    sim.Faults
		wantErr string
	}{
		{name: "empty", spec: "", want: sim.Faults{}},
		{
			name: "full example",
			spec: `5xx=0.05,429burst=0.01:5,latency=20ms,jitter=80ms,drop=0.01,hang=0.01:3s,reject=@bad\.example$`,
			want: sim.Faults{
				ServerErrorRate: 0.05, ThrottleBurstRate: 0.01, ThrottleBurstLen: 5,
				Latency: 20 * time.Millisecond, Jitter: 80 * time.Millisecond, DropRate: 0.01, HangRate: 0.01, HangFor: 3 * time.Second,
				RejectEmails: `@bad\.example$`,
			},
		},
		{name: "defaults left zero", spec: "429burst=0.5, hang=1", want: sim.Faults{ThrottleBurstRate: 0.5, HangRate: 1}},
		{name: "reject keeps commas", spec: "drop=0.1,reject=^a{1,3}@x$", want: sim.Faults{DropRate: 0.1, RejectEmails: "^a{1,3}@x$"}},
		{name: "trailing comma", spec: "5xx=1,", want: sim.Faults{ServerErrorRate: 1}},
		{name: "unknown key", spec: "boom=1", wantErr: `unknown key "boom"`},
		{name: "rate above 1", spec: "5xx=1.5", wantErr: "between 0 and 1"},
		{name: "rate not a number", spec: "drop=lots", wantErr: "between 0 and 1"},
		{name: "no equals", spec: "latency", wantErr: "want KEY=VALUE"},
		{name: "bad duration", spec: "latency=fast", wantErr: `duration "fast"`},
		{name: "negative jitter", spec: "jitter=-1ms", wantErr: "negative"},
		{name: "negative duration", spec: "hang=0.1:-1s", wantErr: "negative"},
		{name: "bad burst length", spec: "429burst=0.1:0", wantErr: "burst length"},
		{name: "bad regexp", spec: "reject=(", wantErr: "bad regexp"},
		{name: "empty regexp", spec: "reject=", wantErr: "empty regexp"},
		{name: "duplicate", spec: "drop=0.1,drop=0.2", wantErr: "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := sim.ParseFaults(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFaults(%q) error = %v, want one containing %q", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFaults(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Errorf("ParseFaults(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
		})
	}
}

func TestFaultsValidate(t *testing.T) {
	t.Parallel()
	for _, f := range []sim.Faults{
		{ServerErrorRate: -0.1},
		{DropRate: 2},
		{ThrottleBurstLen: -1},
		{Latency: -time.Second},
		{RejectEmails: "["},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", f)
		}
	}
}

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
