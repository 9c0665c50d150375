package runpage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// browser is headless Chromium driven over the DevTools protocol, with
// x/net/websocket (already a dependency) rather than a CDP library.
type browser struct {
	port string // the DevTools HTTP and websocket port
}

// startBrowser starts Chromium with its only way out through proxyAddr.
// The background-networking flags keep most of Chromium's own traffic
// (updates, sync, sign-in) from starting; what remains goes to the proxy,
// which refuses it, so a test never reaches the network either way.
func startBrowser(t *testing.T, bin, proxyAddr string) *browser {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir="+dir, "--remote-debugging-port=0", "--remote-allow-origins=*",
		"--proxy-server=http://"+proxyAddr, "--proxy-bypass-list=<-loopback>", "about:blank")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting chromium: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // killed at cleanup
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	// Chromium writes the port it chose into DevToolsActivePort.
	var port string
	deadline := time.Now().Add(60 * time.Second)
	for port == "" {
		if raw, err := os.ReadFile(filepath.Join(dir, "DevToolsActivePort")); err == nil {
			port, _, _ = strings.Cut(string(raw), "\n")
		}
		select {
		case <-exited:
			t.Fatalf("chromium exited before it listened: %s", stderr.Bytes())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromium did not open its DevTools port within a minute: %s", stderr.Bytes())
		}
	}
	return &browser{port: port}
}

// tab is one page target and the network requests it made.
type tab struct {
	ws      *websocket.Conn
	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMessage
	events  []cdpMessage
	changed chan struct{} // closed and replaced when an event arrives
	done    chan struct{} // closed when the connection ends
}

type cdpMessage struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// newTab opens a blank page target and attaches to it.
func (b *browser) newTab(t *testing.T) *tab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://127.0.0.1:"+b.port+"/json/new?about:blank", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	defer resp.Body.Close()
	var target struct {
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&target); err != nil || target.WebSocketDebuggerURL == "" {
		t.Fatalf("opening a tab: %s %v", resp.Status, err)
	}
	ws, err := websocket.Dial(target.WebSocketDebuggerURL, "", "http://127.0.0.1/")
	if err != nil {
		t.Fatalf("attaching to the tab: %v", err)
	}
	tb := &tab{ws: ws, pending: map[int]chan cdpMessage{}, changed: make(chan struct{}), done: make(chan struct{})}
	go tb.read()
	t.Cleanup(func() { ws.Close() })
	return tb
}

func (tb *tab) read() {
	defer close(tb.done)
	for {
		var m cdpMessage
		if err := websocket.JSON.Receive(tb.ws, &m); err != nil {
			return
		}
		tb.mu.Lock()
		if m.ID != 0 {
			if ch := tb.pending[m.ID]; ch != nil {
				ch <- m
				delete(tb.pending, m.ID)
			}
		} else {
			tb.events = append(tb.events, m)
			close(tb.changed)
			tb.changed = make(chan struct{})
		}
		tb.mu.Unlock()
	}
}

// call sends one command and decodes its result into result (if not nil).
func (tb *tab) call(ctx context.Context, method string, params, result any) error {
	tb.mu.Lock()
	tb.nextID++
	id := tb.nextID
	ch := make(chan cdpMessage, 1)
	tb.pending[id] = ch
	tb.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	if err := websocket.JSON.Send(tb.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				return fmt.Errorf("%s: decoding the result: %w", method, err)
			}
		}
		return nil
	case <-tb.done:
		return fmt.Errorf("%s: the connection to Chromium ended", method)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// waitEvent waits for an event of method whose params satisfy match.
func (tb *tab) waitEvent(ctx context.Context, method string, match func(json.RawMessage) bool) error {
	seen := 0
	for {
		tb.mu.Lock()
		evs, changed := tb.events[seen:], tb.changed
		seen = len(tb.events)
		tb.mu.Unlock()
		for _, e := range evs {
			if e.Method == method && (match == nil || match(e.Params)) {
				return nil
			}
		}
		select {
		case <-changed:
		case <-tb.done:
			return errors.New("waiting for " + method + ": the connection to Chromium ended")
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", method, ctx.Err())
		}
	}
}

// requests lists the URL of every request the page made, from the
// protocol's Network.requestWillBeSent events: the page's own fetches,
// not Chromium's background traffic.
func (tb *tab) requests() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []string
	for _, e := range tb.events {
		if e.Method != "Network.requestWillBeSent" {
			continue
		}
		var p struct {
			Request struct {
				URL string `json:"url"`
			} `json:"request"`
		}
		if json.Unmarshal(e.Params, &p) == nil {
			out = append(out, p.Request.URL)
		}
	}
	return out
}

// load opens url, waits until its network has been idle, and returns the
// rendered DOM.
func (tb *tab) load(ctx context.Context, url string) (string, error) {
	for _, m := range []string{"Network.enable", "Page.enable"} {
		if err := tb.call(ctx, m, nil, nil); err != nil {
			return "", err
		}
	}
	if err := tb.call(ctx, "Page.setLifecycleEventsEnabled", map[string]bool{"enabled": true}, nil); err != nil {
		return "", err
	}
	var nav struct {
		LoaderID  string `json:"loaderId"`
		ErrorText string `json:"errorText"`
	}
	if err := tb.call(ctx, "Page.navigate", map[string]string{"url": url}, &nav); err != nil {
		return "", err
	}
	if nav.ErrorText != "" {
		return "", fmt.Errorf("navigating to %s: %s", url, nav.ErrorText)
	}
	// networkIdle (of this navigation, not the blank page before): the
	// load event fired and no request was open for 500 ms, so anything the
	// page would fetch has been asked for.
	if err := tb.waitEvent(ctx, "Page.lifecycleEvent", func(p json.RawMessage) bool {
		var ev struct{ Name, LoaderID string }
		return json.Unmarshal(p, &ev) == nil && ev.Name == "networkIdle" && ev.LoaderID == nav.LoaderID
	}); err != nil {
		return "", err
	}
	var res struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
	}
	if err := tb.call(ctx, "Runtime.evaluate", map[string]any{"expression": "document.documentElement.outerHTML", "returnByValue": true}, &res); err != nil {
		return "", err
	}
	return res.Result.Value, nil
}

// screenshot captures the page at width CSS pixels, down to at most
// maxHeight.
func (tb *tab) screenshot(ctx context.Context, width, maxHeight int) ([]byte, error) {
	// A short viewport, so the content height is the page's, not the window's.
	if err := tb.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": 100, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		return nil, err
	}
	var metrics struct {
		CSSContentSize struct {
			Height float64 `json:"height"`
		} `json:"cssContentSize"`
	}
	if err := tb.call(ctx, "Page.getLayoutMetrics", nil, &metrics); err != nil {
		return nil, err
	}
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	err := tb.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": width, "height": min(metrics.CSSContentSize.Height, float64(maxHeight)), "scale": 1}}, &shot)
	return shot.Data, err
}
