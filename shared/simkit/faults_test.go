package simkit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/simkit"
)

func TestParseFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		spec    string
		want    simkit.Faults
		wantErr string
	}{
		{name: "empty", spec: "", want: simkit.Faults{}},
		{
			name: "full example",
			spec: `5xx=0.05,429burst=0.01:5,latency=20ms,jitter=80ms,drop=0.01,hang=0.01:3s,reject=@bad\.example$`,
			want: simkit.Faults{
				ServerErrorRate: 0.05, ThrottleBurstRate: 0.01, ThrottleBurstLen: 5,
				Latency: 20 * time.Millisecond, Jitter: 80 * time.Millisecond, DropRate: 0.01, HangRate: 0.01, HangFor: 3 * time.Second,
				RejectEmails: `@bad\.example$`,
			},
		},
		{name: "defaults left zero", spec: "429burst=0.5, hang=1", want: simkit.Faults{ThrottleBurstRate: 0.5, HangRate: 1}},
		{name: "reject keeps commas", spec: "drop=0.1,reject=^a{1,3}@x$", want: simkit.Faults{DropRate: 0.1, RejectEmails: "^a{1,3}@x$"}},
		{name: "trailing comma", spec: "5xx=1,", want: simkit.Faults{ServerErrorRate: 1}},
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
			got, err := simkit.ParseFaults(tt.spec)
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
	for _, f := range []simkit.Faults{
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
