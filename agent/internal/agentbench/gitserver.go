package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// gitServer is a real git-daemon on loopback behind a counting TCP proxy:
// every byte the agent sends and receives passes through the proxy, which
// also sorts connections by the service the client asked for.
type gitServer struct {
	daemon *exec.Cmd
	target string // git-daemon's address
	l      net.Listener
	active atomic.Int64
	mu     sync.Mutex
	stats  map[string]*traffic // by service: git-upload-pack, git-receive-pack
	conns  []conn              // in the order they ended
}

// conn is one proxied connection.
type conn struct {
	service    string
	start, end time.Time
	up, down   int64
}

// traffic is what the proxy saw for one service.
type traffic struct {
	conns    int
	up, down int64 // client→server, server→client
}

// startGitServer serves base (read and receive-pack) with the git-daemon
// binary itself: `git daemon` is a wrapper that would leave the daemon
// running when killed.
func startGitServer(base string, env []string, log io.Writer) (*gitServer, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("git --exec-path: %w", err)
	}
	bin := strings.TrimSpace(string(out)) + "/git-daemon"
	// git-daemon takes a port number, not a listener: pick a free one.
	// Another process could take it in between; then the start fails
	// clearly below.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := pl.Addr().(*net.TCPAddr).Port
	pl.Close()
	s := &gitServer{target: fmt.Sprintf("127.0.0.1:%d", port), stats: map[string]*traffic{}}
	s.daemon = exec.Command(bin, "--reuseaddr", "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port),
		"--export-all", "--enable=receive-pack", "--informative-errors", "--base-path="+base, base)
	s.daemon.Env = env
	s.daemon.Stderr = log
	if err := s.daemon.Start(); err != nil {
		return nil, fmt.Errorf("start git-daemon: %w", err)
	}
	exited := make(chan struct{})
	go func() { s.daemon.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.target, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("git-daemon on %s exited at start", s.target)
		default:
		}
		if time.Now().After(deadline) {
			s.daemon.Process.Kill()
			return nil, fmt.Errorf("git-daemon on %s: not accepting connections after 10s: %w", s.target, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		s.daemon.Process.Kill()
		return nil, err
	}
	go s.serve()
	return s, nil
}

// Addr is the proxy's address, the one the agent is given.
func (s *gitServer) Addr() string { return s.l.Addr().String() }

// Close stops the proxy and the daemon (its children end with their
// connections).
func (s *gitServer) Close() {
	s.l.Close()
	s.daemon.Process.Kill()
}

func (s *gitServer) serve() {
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.active.Add(1)
		go s.handle(c)
	}
}

func (s *gitServer) handle(c net.Conn) {
	defer s.active.Add(-1)
	defer c.Close()
	d, err := net.Dial("tcp", s.target)
	if err != nil {
		return
	}
	defer d.Close()
	// The first pkt-line names the service ("git-upload-pack /repo\0host=…").
	br := bufio.NewReader(c)
	head, _ := br.Peek(4 + len("git-receive-pack"))
	service := "other"
	if len(head) > 4 {
		service = strings.Fields(string(head[4:]))[0]
	}
	start := time.Now()
	var up, down int64
	done := make(chan struct{})
	go func() {
		up, _ = io.Copy(d, br)
		d.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	down, _ = io.Copy(c, d)
	c.(*net.TCPConn).CloseWrite()
	<-done
	s.mu.Lock()
	t := s.stats[service]
	if t == nil {
		t = &traffic{}
		s.stats[service] = t
	}
	t.conns++
	t.up += up
	t.down += down
	s.conns = append(s.conns, conn{service, start, time.Now(), up, down})
	s.mu.Unlock()
}

// take waits until every proxied connection has ended (so the counts hold
// all the bytes of the process that just exited) and returns and resets them.
func (s *gitServer) take(timeout time.Duration) (map[string]traffic, []conn, error) {
	deadline := time.Now().Add(timeout)
	for s.active.Load() != 0 {
		if time.Now().After(deadline) {
			return nil, nil, errors.New("git proxy: connections still open after the agent exited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]traffic{}
	for k, v := range s.stats {
		out[k] = *v
	}
	conns := s.conns
	s.stats, s.conns = map[string]*traffic{}, nil
	sort.Slice(conns, func(i, j int) bool { return conns[i].start.Before(conns[j].start) })
	return out, conns, nil
}
