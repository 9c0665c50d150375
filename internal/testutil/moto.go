package testutil

import (
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Moto starts moto_server (a second emulator of S3, Secrets Manager, Step
// Functions and more, in one process) on a free loopback port for this
// test and returns its endpoint, "http://127.0.0.1:PORT". A missing
// moto_server is handled as NeedTool says.
func Moto(t testing.TB) string {
	t.Helper()
	bin := NeedTool(t, "moto_server", "the image's pyenv python3 (pip install 'moto[server]' where PyPI is reachable)")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", port)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting moto_server: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if err := cmd.Process.Kill(); err != nil {
			t.Logf("stopping moto_server: %v", err)
		}
		<-exited
	})
	endpoint := "http://127.0.0.1:" + port
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("moto_server exited: %v\n%s", waitErr, out.String())
		default:
		}
		if resp, err := client.Get(endpoint + "/moto-api/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return endpoint
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not answer on %s within 30 s\n%s", endpoint, out.String())
		}
	}
}
