// Package thirdparty checks the simulator against a client segpilot did not
// write: the autopilot-api npm package, unmodified, must work against it as
// it would against Autopilot.
package thirdparty

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

const key = "KEY-thirdparty-0123"

// seen is what client_check.js printed.
type seen struct {
	Account        map[string]any `json:"account"`
	Bulk           []int          `json:"bulk"`
	One            struct{ Email, First, Tier string }
	ContactPages   int      `json:"contactPages"`
	Contacts       int      `json:"contacts"`
	Fields         []string `json:"fields"`
	ListID         string   `json:"listId"`
	Lists          []string `json:"lists"`
	HasOne         int      `json:"hasOne"`
	RemovedStatus  int      `json:"removedStatus"`
	Roster         []string `json:"roster"`
	Unsubscribed   bool     `json:"unsubscribed"`
	DeletedStatus  int      `json:"deletedStatus"`
	Triggers       bool     `json:"triggers"`
	WrongKeyStatus int      `json:"wrongKeyStatus"`
}

func TestUnmodifiedNodeClient(t *testing.T) {
	t.Parallel()
	node := testutil.NeedTool(t, "node", "apt-get install -y nodejs npm, then make test (it runs npm ci here)")
	if _, err := os.Stat("node_modules/autopilot-api/index.js"); err != nil {
		t.Fatalf("autopilot-api is not installed: run `npm ci --prefix internal/thirdparty` (make test does): %v", err)
	}
	s := sim.New(sim.Options{APIKey: key})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client_check.js", srv.URL+"/v1/")
	cmd.Env = append(os.Environ(), "AUTOPILOT_API_KEY="+key)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("client_check.js: %v\n%s", err, stderr.String())
	}
	var got seen
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("client_check.js printed %q: %v", stdout.String(), err)
	}

	checks := []struct {
		what      string
		got, want any
	}{
		{"bulk upserts (ids per call)", got.Bulk, []int{100, 50}},
		{"single upsert read back", got.One, struct{ Email, First, Tier string }{"one@example.com", "One", "gold"}},
		{"contacts paged", [2]int{got.ContactPages, got.Contacts}, [2]int{2, 151}},
		{"custom fields", got.Fields, []string{"Tier"}},
		{"lists", got.Lists, []string{"Third party"}},
		{"membership check", got.HasOne, 200},
		{"removed member check", got.RemovedStatus, 404},
		{"list roster", got.Roster, []string{"one@example.com"}},
		{"unsubscribed after a later upsert", got.Unsubscribed, true},
		{"deleted contact", got.DeletedStatus, 404},
		{"triggers listed", got.Triggers, true},
		{"wrong key", got.WrongKeyStatus, 401},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	if got.Account["instanceId"] == nil {
		t.Errorf("account: %v", got.Account)
	}

	// The simulator holds what the client did.
	st := s.Dump()
	if len(st.Contacts) != 150 {
		t.Errorf("simulator holds %d contacts, want 150 (151 upserted, 1 deleted)", len(st.Contacts))
	}
	if len(st.Lists) != 1 || st.Lists[0].ID != got.ListID || !slices.Equal(st.Lists[0].Members, []string{"one@example.com"}) {
		t.Errorf("simulator lists %+v, want %s holding one@example.com", st.Lists, got.ListID)
	}
	for _, c := range st.Contacts {
		if strings.EqualFold(c.Email, "bulk001@example.com") && !c.Unsubscribed {
			t.Errorf("bulk001@example.com was re-subscribed by an upsert")
		}
	}
}
