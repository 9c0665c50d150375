package sim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

const testKey = "test-key-123"

// apiClient is a plain net/http client for the simulator.
type apiClient struct {
	t    *testing.T
	base string // ends in /v1
	key  string
	hc   *http.Client
}

func start(t *testing.T, opts sim.Options) (*sim.Server, *apiClient) {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	s := sim.New(opts)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, &apiClient{t: t, base: ts.URL + "/v1", key: opts.APIKey, hc: &http.Client{Timeout: 10 * time.Second}}
}

// send makes a request and returns the status and raw body, failing the
// test on a transport error.
func (c *apiClient) send(method, path string, body any) (int, []byte, http.Header) {
	c.t.Helper()
	resp, err := c.try(method, path, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header
}

func (c *apiClient) try(method, path string, body any) (*http.Response, error) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			c.t.Fatalf("encoding body: %v", err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatalf("building request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("autopilotapikey", c.key)
	}
	return c.hc.Do(req)
}

// call sends a request, checks the status and decodes the JSON answer.
func (c *apiClient) call(method, path string, body any, wantStatus int) map[string]any {
	c.t.Helper()
	status, b, _ := c.send(method, path, body)
	if status != wantStatus {
		c.t.Fatalf("%s %s = %d %s, want %d", method, path, status, b, wantStatus)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		c.t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, path, b, err)
	}
	return out
}

func (c *apiClient) upsert(contact map[string]any) string {
	c.t.Helper()
	out := c.call("POST", "/contact", map[string]any{"contact": contact}, http.StatusOK)
	id, _ := out["contact_id"].(string)
	if id == "" {
		c.t.Fatalf("upsert answered %v, want a contact_id", out)
	}
	return id
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func findContact(st sim.State, email string) (sim.Contact, bool) {
	for _, c := range st.Contacts {
		if c.Email == email {
			return c, true
		}
	}
	return sim.Contact{}, false
}
