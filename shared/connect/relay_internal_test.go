package connect

import (
	"context"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/run"
)

// TestRelayStartsAnIntervalOn: a relay group's first request goes an
// interval after the group began (less a round trip: none here), in a
// warm container whose limiter has been idle (its bucket full) too: the
// worker it takes over from sent its last at most an interval before.
// (Seen failing with the relay given no start: it sent at once; in the
// Lambda model the shares then sent 4-8 % over their budget near a run's
// end and met stray 429s.)
func TestRelayStartsAnIntervalOn(t *testing.T) {
	t.Parallel()
	const rps = 25
	interval := time.Second / rps
	c := &Connector{StartPhase: func(time.Duration) time.Duration { return 0 }}
	conn := config.Connection{Name: "c", RequestsPerSecond: 100}
	ctx := context.Background()
	first := c.limiter(conn, run.Share{RPS: rps}, dest.Capabilities{})
	if err := first.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	first.Done()
	time.Sleep(2 * interval) // idle between groups: a token in its bucket again

	relay := c.limiter(conn, run.Share{RPS: rps, Relay: true, Began: time.Now()}, dest.Capabilities{})
	if relay != first {
		t.Fatal("a warm container's next group made a new limiter; want the one it has")
	}
	start := time.Now()
	if err := relay.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < interval*3/4 {
		t.Fatalf("the relay's first request went %v after it began; want an interval (%v)", waited, interval)
	}
}
