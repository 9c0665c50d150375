package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
)

// TestKillSoak is issue 19's random-kill soak (make soak): six weekly files
// of 20,000 profiles, in mirror mode with about 2 % churn a week, each run
// by 'segpilot run' processes killed (SIGKILL) at a random moment 0.1 to 4
// seconds in, again and again, until one is left to finish. After the last
// week the list must equal that week's segment exactly, in every trial: no
// file wedges, no leaver stays, no stale value wins. (Before the lifecycle
// was recorded: weeks wedged, later weeks were held by the brake, and 188
// to 1,066 leavers stayed on the list.)
//
// SEGPILOT_SOAK=1 runs it (20 trials; SEGPILOT_SOAK_TRIALS=N for others).
func TestKillSoak(t *testing.T) {
	if os.Getenv("SEGPILOT_SOAK") == "" {
		t.Skip("a soak: make soak runs it (SEGPILOT_SOAK=1)")
	}
	trials := 20
	if n, err := strconv.Atoi(os.Getenv("SEGPILOT_SOAK_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	for trial := range trials {
		t.Run(fmt.Sprint("trial ", trial), func(t *testing.T) {
			t.Parallel()
			killSoakTrial(t, uint64(trial))
		})
	}
}

func killSoakTrial(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 19))
	config, _, bucket := fixtureAt(t, 0, 25)
	cfg, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, bytes.Replace(cfg, []byte("mode: upsert"), []byte("mode: mirror"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, url := serveSim(t, 25)
	var last []byte
	kills := 0
	for week := range 6 {
		var data bytes.Buffer
		if _, err := sample.Write(&data, sample.Options{Rows: 20000, Seed: 7, Invalid: 97, Dupes: 89,
			Changed: 10 * week, Removed: 10 * week, Added: 100 * week}); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(filepath.Dir(config), fmt.Sprintf("week%d.csv", week))
		if err := os.WriteFile(file, data.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"run", "--config", config, "--export", "vip-newsletter", "--file", file, "--bucket-dir", bucket}
		for try := 1; ; try++ {
			p := start(t, url, args...)
			exited := make(chan struct{})
			go func() { p.cmd.Wait(); close(exited) }() //nolint:errcheck // the exit code is read below
			window := time.Duration(100+rng.IntN(3900)) * time.Millisecond
			killed := false
			select {
			case <-exited:
			case <-time.After(window):
				if try <= 8 { // then one is left to finish
					killed = p.cmd.Process.Kill() == nil
					kills++
				}
				<-exited
			}
			code := p.cmd.ProcessState.ExitCode()
			if !killed && code == 0 {
				break
			}
			if !killed {
				t.Fatalf("week %d, try %d: exit %d\n%s\n%s", week, try, code, p.out.String(), p.err.String())
			}
			if try > 20 {
				t.Fatalf("week %d: still not done after %d tries", week, try)
			}
		}
		last = data.Bytes()
	}
	want := segmentOf(t, last)
	dump := s.Dump()
	var members []string
	for _, l := range dump.Lists {
		if l.Title != "VIP customers" {
			t.Fatalf("a list %q (%s) besides the export's", l.Title, l.ID)
		}
		members = append(members, l.Members...)
	}
	slices.Sort(members)
	wantMembers := slices.Sorted(maps.Keys(want))
	if !slices.Equal(members, wantMembers) {
		extra, missing := diff(members, wantMembers)
		t.Fatalf("after %d kills the list holds %d, the last segment %d: %d extra (%v), %d missing (%v)",
			kills, len(members), len(wantMembers), len(extra), extra[:min(3, len(extra))], len(missing), missing[:min(3, len(missing))])
	}
	for _, c := range dump.Contacts {
		if tier, ok := want[strings.ToLower(c.Email)]; ok && c.Custom["string--Loyalty--Tier"] != tier {
			t.Fatalf("%s holds tier %v, the last segment says %s", c.Email, c.Custom["string--Loyalty--Tier"], tier)
		}
	}
	t.Logf("6 weeks, %d kills: the list is the last segment's %d contacts", kills, len(want))
}

// segmentOf is an oracle of a generated file: its valid profiles' emails
// (lower case, last row wins) and loyalty tiers.
func segmentOf(t *testing.T, data []byte) map[string]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	if _, err := r.Read(); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		email := strings.ToLower(rec[1])
		at := strings.Index(email, "@")
		if _, err := strconv.Atoi(rec[5]); err != nil || at < 1 || strings.Count(email, "@") != 1 ||
			strings.ContainsAny(email, " <>") || !strings.Contains(email[at:], ".") {
			continue
		}
		out[email] = rec[4]
	}
}

// diff returns what got has that want lacks, and what it lacks; both sorted.
func diff(got, want []string) (extra, missing []string) {
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok {
			extra = append(extra, g)
		}
	}
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok {
			missing = append(missing, w)
		}
	}
	return extra, missing
}
