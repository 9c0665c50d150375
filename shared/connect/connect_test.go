package connect_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/connect"
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
	conn := config.Connection{Name: "main", APIKeySecret: "k", BaseURL: config.DefaultBaseURL, RequestsPerSecond: 5}
	for _, base := range []string{"http://192.0.2.1/v1", "http://api2.autopilothq.com/v1", "ftp://127.0.0.1/v1", "http://user:pw@127.0.0.1/v1"} {
		c := &connect.Connector{Secrets: secrets.Static{"k": "KEY"}, BaseURL: base, HTTPClient: client}
		dest, err := c.Connect(context.Background(), conn, 0)
		if err == nil {
			_, err = dest.EnsureList(context.Background(), "VIP")
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
