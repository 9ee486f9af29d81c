// Command demohook is the webhook receiver of `make demo`: the second
// service of every demo node, called by the broker (agent/internal/demosvc)
// as VerneMQ's webhooks plugin calls its endpoint. One static binary:
//
//	demohook                 serve: read the config, answer on its socket
//	demohook ping            pong and what it has received, or exit 1
//
// It listens on a TCP address: the demo's brokers call it by its container
// name on their node's Docker network (http://pullship-demo-hook-cn:7777).
// A unix socket is the other choice, for a receiver that only processes
// sharing a directory with it may call.
//
// Config (/etc/hook/hook.conf, key = value; other keys are ignored):
//
//	socket = /run/hook/hook.sock   where it listens, or
//	listen = 0.0.0.0:7777          (one of the two is required)
//	greeting = hello               printed by ping: shows which config runs
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const defaultConfig = "/etc/hook/hook.conf"

func main() {
	cfgPath := os.Getenv("DEMOHOOK_CONFIG")
	if cfgPath == "" {
		cfgPath = defaultConfig
	}
	args := os.Args[1:]
	switch {
	case len(args) == 0 || args[0] == "serve":
		os.Exit(serve(cfgPath))
	case len(args) == 1 && args[0] == "ping":
		os.Exit(ping(cfgPath, os.Stdout))
	}
	fmt.Fprintln(os.Stderr, "usage: demohook [serve] | demohook ping")
	os.Exit(2)
}

type config struct{ socket, listen, greeting string }

func loadConfig(path string) (config, error) {
	var cfg config
	f, err := os.Open(path)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.HasPrefix(strings.TrimSpace(k), "#") {
			continue
		}
		switch strings.TrimSpace(k) {
		case "socket":
			cfg.socket = strings.TrimSpace(v)
		case "listen":
			cfg.listen = strings.TrimSpace(v)
		case "greeting":
			cfg.greeting = strings.TrimSpace(v)
		}
	}
	if (cfg.socket == "") == (cfg.listen == "") {
		return cfg, fmt.Errorf("config %s: want one of socket and listen", path)
	}
	return cfg, sc.Err()
}

func serve(cfgPath string) int {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demohook:", err)
		return 1
	}
	network, addr := "tcp", cfg.listen
	if cfg.socket != "" {
		network, addr = "unix", cfg.socket
		os.MkdirAll(filepath.Dir(cfg.socket), 0o755)
		os.Remove(cfg.socket) // a stale socket from a previous run
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demohook:", err)
		return 1
	}
	if cfg.socket != "" {
		os.Chmod(cfg.socket, 0o666)
	}
	var calls atomic.Int64
	var last atomic.Value
	last.Store("")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		calls.Add(1)
		last.Store(string(b))
		fmt.Fprintln(w, `{"result":"ok"}`)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pong greeting=%s calls=%d last=%s\n", cfg.greeting, calls.Load(), last.Load())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	fmt.Fprintf(os.Stderr, "demohook: listening on %s %s (greeting %s)\n", network, addr, cfg.greeting)
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "demohook:", err)
		return 1
	}
	return 0
}

func ping(cfgPath string, w io.Writer) int {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(w, "demohook:", err)
		return 1
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if cfg.socket == "" {
				_, port, _ := net.SplitHostPort(cfg.listen)
				return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
			}
			return (&net.Dialer{}).DialContext(ctx, "unix", cfg.socket)
		}}}
	resp, err := c.Get("http://demohook/health")
	if err != nil {
		fmt.Fprintln(w, "demohook not responding:", err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	w.Write(b)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "pong") {
		return 1
	}
	return 0
}
