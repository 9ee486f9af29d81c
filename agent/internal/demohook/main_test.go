package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The receiver counts the webhook calls it answers, and ping reports them
// with the greeting of the config it runs.
func TestServeAndPing(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hook.conf")
	sock := filepath.Join(dir, "run", "hook.sock")
	if err := os.WriteFile(cfg, []byte("socket = "+sock+"\ngreeting = hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if ping(cfg, &out) == 0 {
		t.Fatalf("ping answered before the receiver runs: %s", out.String())
	}
	go serve(cfg)
	waitPing(t, cfg)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://demohook/webhook", "application/json", strings.NewReader(`{"hook":"on_register","node":"VerneMQ@10.0.0.1"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("webhook call: %v %v", resp, err)
	}
	resp.Body.Close()
	out.Reset()
	if ping(cfg, &out) != 0 || !strings.Contains(out.String(), "pong greeting=hi calls=1 last={\"hook\":\"on_register\",\"node\":\"VerneMQ@10.0.0.1\"}") {
		t.Fatalf("ping after one call: %s", out.String())
	}
}

// With listen, the receiver answers on TCP, and ping reaches it through
// the loopback address.
func TestServeTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(t.TempDir(), "hook.conf")
	if err := os.WriteFile(cfg, []byte("listen = "+addr+"\ngreeting = tcp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	go serve(cfg)
	said := waitPing(t, cfg)
	if !strings.HasPrefix(said, "pong greeting=tcp calls=0") {
		t.Fatalf("ping: %s", said)
	}
}

// waitPing waits until the receiver of cfg answers a ping (polling: the
// receiver starts in a goroutine), and returns what it said.
func waitPing(t *testing.T, cfg string) string {
	t.Helper()
	var out bytes.Buffer
	deadline := time.Now().Add(time.Minute)
	for ping(cfg, &out) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("receiver never answered: %s", out.String())
		}
		out.Reset()
		time.Sleep(20 * time.Millisecond)
	}
	return out.String()
}
