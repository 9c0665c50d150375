package connect_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	autopilotsim "github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/connect"
	"github.com/segpilot/segpilot/shared/dest"
	orttosim "github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
)

// TestConnectRefusesKeyInClearText: a base URL override that would send
// the API key over plain http to a host other than loopback fails before
// any connection is made (AUTOPILOT_BASE_URL skips the config's check).
func TestConnectRefusesKeyInClearText(t *testing.T) {
	t.Parallel()
	var dials atomic.Int32
	client := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, net.ErrClosed
	}}}
	conn := config.Connection{Name: "main", Kind: "autopilot", APIKeySecret: "k", BaseURL: config.DefaultBaseURL, RequestsPerSecond: 5}
	for _, base := range []string{"http://192.0.2.1/v1", "http://api2.autopilothq.com/v1", "ftp://127.0.0.1/v1", "http://user:pw@127.0.0.1/v1"} {
		c := &connect.Connector{Secrets: secrets.Static{"k": "KEY"}, BaseURLs: map[string]string{"autopilot": base}, HTTPClient: client}
		d, err := c.Connect(context.Background(), conn, run.Share{})
		if err == nil {
			_, err = d.PrepareList(context.Background(), dest.ListSpec{Title: "VIP"})
			t.Errorf("%s: connected (then %v); want refused before any request", base, err)
			continue
		}
		if strings.Contains(err.Error(), "KEY") {
			t.Errorf("%s: the error shows the key: %v", base, err)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d connections attempted", n)
	}
}

// TestConnectPicksTheKindsAdapter: the connection's kind chooses the
// adapter; its key comes from its own secret, which in Lambda must be a
// segpilot/ one (the functions may read no other).
func TestConnectPicksTheKindsAdapter(t *testing.T) {
	t.Parallel()
	src := secrets.Static{"segpilot/autopilot": "A-KEY", "segpilot/ortto": "O-KEY", "other/ortto": "X-KEY"}
	c := &connect.Connector{Secrets: src, SecretPrefix: "segpilot/"}
	for _, tt := range []struct {
		conn config.Connection
		want string // the adapter's type, or the error's words
	}{
		{config.Connection{Name: "a", Kind: "autopilot", APIKeySecret: "segpilot/autopilot", BaseURL: config.DefaultBaseURL}, "*autopilot.Client"},
		{config.Connection{Name: "o", Kind: "ortto", APIKeySecret: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:segpilot/ortto", BaseURL: "https://api.eu.ap3api.com/v1"}, "refused"},
		{config.Connection{Name: "o", Kind: "ortto", APIKeySecret: "segpilot/ortto", BaseURL: "https://api.eu.ap3api.com/v1"}, "*ortto.Client"},
		{config.Connection{Name: "x", Kind: "ortto", APIKeySecret: "other/ortto", BaseURL: "https://api.ap3api.com/v1"}, "is not named segpilot/"},
		{config.Connection{Name: "m", Kind: "mailchimp", APIKeySecret: "segpilot/m", BaseURL: "https://example.com"}, "not one of autopilot, ortto"},
	} {
		d, err := c.Connect(context.Background(), tt.conn, run.Share{RPS: 1})
		got := fmt.Sprintf("%T", d)
		if err != nil {
			got = err.Error()
		}
		if tt.want == "refused" { // an ARN names the secret too: its name decides
			if err == nil || !strings.Contains(err.Error(), "reading the API key") {
				t.Errorf("%s: %s; want the ARN's secret read (and missing here)", tt.conn.Name, got)
			}
			continue
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("%s: %s; want %s", tt.conn.Name, got, tt.want)
		}
	}
}

// TestBaseURLWithOrWithoutTheAPIPath: a connection's baseURL, or the
// <KIND>_BASE_URL override, may name the host alone (as the README and
// messages write it) or the host with /v1, with or without a trailing
// slash: each reaches the kind's real simulator on loopback and sends.
func TestBaseURLWithOrWithoutTheAPIPath(t *testing.T) {
	t.Parallel()
	type sim interface {
		http.Handler
		Upserted() map[string]int
	}
	kinds := []struct {
		kind string
		sim  func() sim
	}{
		{"autopilot", func() sim { return autopilotsim.New(autopilotsim.Options{APIKey: "KEY"}) }},
		{"ortto", func() sim { return orttosim.New(orttosim.Options{APIKey: "KEY"}) }},
	}
	for _, k := range kinds {
		for _, suffix := range []string{"", "/", "/v1", "/v1/"} {
			for _, via := range []string{"config", "override"} {
				t.Run(k.kind+"/"+via+"/host"+suffix, func(t *testing.T) {
					t.Parallel()
					s := k.sim()
					srv := httptest.NewServer(s)
					defer srv.Close()
					base := srv.URL + suffix
					yaml := "connections:\n  c:\n    kind: " + k.kind + "\n    apiKeySecret: segpilot/c\n    consent: true\n"
					if via == "config" {
						yaml += "    baseURL: " + base + "\n"
					}
					yaml += "exports:\n  e:\n    connection: c\n    segment: s\n    list: VIP\n    match: {email: Email}\n"
					cfg, err := config.Load("exports.yaml", []byte(yaml))
					if err != nil {
						t.Fatal(err)
					}
					c := &connect.Connector{Secrets: secrets.Static{"segpilot/c": "KEY"}}
					if via == "override" {
						c.BaseURLs = map[string]string{k.kind: base}
					}
					d, err := c.Connect(context.Background(), *cfg.Connections["c"], run.Share{})
					if err != nil {
						t.Fatal(err)
					}
					list, err := d.PrepareList(context.Background(), dest.ListSpec{Title: "VIP"})
					if err != nil {
						t.Fatalf("base URL %s: %v", base, err)
					}
					outs, err := d.Upsert(context.Background(), list, []dest.Contact{{Email: "ada@example.com"}}, dest.WriteAny)
					if err != nil || len(outs) != 1 || outs[0].Status != dest.Sent {
						t.Fatalf("base URL %s: %+v, %v", base, outs, err)
					}
					if s.Upserted()["ada@example.com"] != 1 {
						t.Fatalf("base URL %s: the simulator holds %v", base, s.Upserted())
					}
				})
			}
		}
	}
}
