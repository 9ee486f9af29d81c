package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// server is one demo node.
type server struct {
	cfgPath string
	ctl     net.Listener
	done    chan struct{}

	mu        sync.Mutex
	cfg       config
	peers     map[string]*peer // every known node but self
	listeners []*retryListener
}

type peer struct {
	addr     string // host:port of its cluster listener
	lastSeen time.Time
}

// hello is the cluster protocol: sent by the dialer, answered in kind; both
// sides learn the other and each other's member list.
type hello struct {
	From    string            `json:"from"`
	Addr    string            `json:"addr"`
	Members map[string]string `json:"members"` // node → cluster address
}

func newServer(cfgPath string) (*server, error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	os.Remove(cfg.control) // a stale socket from a previous run
	ctl, err := net.Listen("unix", cfg.control)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &server{cfgPath: cfgPath, ctl: ctl, done: make(chan struct{}), cfg: cfg, peers: map[string]*peer{}}
	s.startListeners()
	go s.serveControl()
	go s.heartbeats()
	return s, nil
}

func (s *server) close() {
	close(s.done)
	s.ctl.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.close()
	}
}

// startListeners binds the cluster and MQTT ports (s.mu held, or not yet
// shared).
func (s *server) startListeners() {
	name := s.cfg.nodename
	s.listeners = []*retryListener{
		listenRetry(s.cfg.cluster, s.handleCluster),
		listenRetry(s.cfg.mqtt, func(c net.Conn) { fmt.Fprintf(c, "demosvc %s\n", name) }),
	}
}

// retryListener keeps trying to bind addr: the overlay address is often
// attached after the service starts, as with the real VerneMQ in the seed.
type retryListener struct {
	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

func listenRetry(addr string, handle func(net.Conn)) *retryListener {
	l := &retryListener{}
	go func() {
		for {
			ln, err := net.Listen("tcp", addr)
			l.mu.Lock()
			if l.closed {
				l.mu.Unlock()
				if err == nil {
					ln.Close()
				}
				return
			}
			l.ln = ln
			l.mu.Unlock()
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			for {
				c, err := ln.Accept()
				if err != nil {
					ln.Close()
					break
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					handle(c)
				}()
			}
		}
	}()
	return l
}

func (l *retryListener) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.ln != nil {
		l.ln.Close()
	}
}

// handleCluster answers one hello.
func (s *server) handleCluster(c net.Conn) {
	var h hello
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&h); err != nil {
		return
	}
	s.learn(h)
	json.NewEncoder(c).Encode(s.hello())
}

func (s *server) hello() hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := hello{From: s.cfg.nodename, Addr: s.cfg.cluster, Members: map[string]string{}}
	for n, p := range s.peers {
		h.Members[n] = p.addr
	}
	return h
}

// learn records that h.From answered now and merges its members.
func (s *server) learn(h hello) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.From == "" || h.From == s.cfg.nodename {
		return
	}
	s.peers[h.From] = &peer{addr: h.Addr, lastSeen: time.Now()}
	for n, addr := range h.Members {
		if _, ok := s.peers[n]; !ok && n != s.cfg.nodename && len(s.peers) < 1000 {
			s.peers[n] = &peer{addr: addr}
		}
	}
}

// greet dials a cluster address and exchanges hellos.
func (s *server) greet(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(s.hello()); err != nil {
		return err
	}
	var h hello
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&h); err != nil {
		return err
	}
	s.learn(h)
	return nil
}

func (s *server) heartbeats() {
	for {
		s.mu.Lock()
		period := s.cfg.heartbeat
		addrs := []string{}
		for _, p := range s.peers {
			addrs = append(addrs, p.addr)
		}
		s.mu.Unlock()
		for _, a := range addrs {
			go s.greet(a, period)
		}
		if hook, node := s.webhook(); hook != "" {
			go callWebhook(hook, node, period)
		}
		select {
		case <-s.done:
			return
		case <-time.After(period):
		}
	}
}

// webhook returns the webhook endpoint and the node's name.
func (s *server) webhook() (endpoint, node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.webhook, s.cfg.nodename
}

// callWebhook posts one on_register call to the webhook endpoint (an
// http:// URL), as VerneMQ's webhooks plugin does; a receiver that is down
// is skipped until the next heartbeat.
func callWebhook(endpoint, node string, timeout time.Duration) {
	body := fmt.Sprintf(`{"hook":"on_register","node":%q}`, node)
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("vernemq-hook", "on_register")
	req.Close = true
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
}

func (s *server) members() []member {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := []member{{Node: s.cfg.nodename, Running: true}}
	for n, p := range s.peers {
		ms = append(ms, member{Node: n, Running: time.Since(p.lastSeen) < 3*s.cfg.heartbeat})
	}
	sortMembers(ms)
	return ms
}

func (s *server) serveControl() {
	for {
		c, err := s.ctl.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var cmd []string
			if err := json.NewDecoder(io.LimitReader(c, 1<<16)).Decode(&cmd); err != nil || len(cmd) == 0 {
				return
			}
			out, code := s.command(cmd)
			json.NewEncoder(c).Encode(response{Out: out, Code: code})
		}()
	}
}

func (s *server) command(cmd []string) (string, int) {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	switch cmd[0] {
	case "ping":
		if !cfg.healthy {
			return fmt.Sprintf("Node '%s' not responding to pings.\n", cfg.nodename), 1
		}
		return "pong\n", 0
	case "show":
		return showTable(s.members()), 0
	case "show-json":
		return showJSON(s.members()), 0
	case "restart":
		if err := s.reload(); err != nil {
			return fmt.Sprintf("restart failed: %v\n", err), 1
		}
		return "", 0
	case "join":
		if len(cmd) != 2 {
			return "usage: join NODE\n", 2
		}
		return s.join(cmd[1], cfg)
	}
	return "unknown command\n", 2
}

// join contacts the discovery node: by its known address, else by the host
// in its name and this node's own cluster port (every node uses the same).
func (s *server) join(node string, cfg config) (string, int) {
	name, host, ok := strings.Cut(node, "@")
	if !ok || name == "" || host == "" {
		return fmt.Sprintf("Invalid discovery node %q\n", node), 1
	}
	if node == cfg.nodename {
		return "Couldn't join cluster due to self_join\n", 1
	}
	s.mu.Lock()
	addr := ""
	if p, ok := s.peers[node]; ok {
		addr = p.addr
	}
	s.mu.Unlock()
	if addr == "" {
		_, port, _ := net.SplitHostPort(cfg.cluster)
		addr = net.JoinHostPort(host, port)
	}
	if err := s.greet(addr, 5*time.Second); err != nil {
		return fmt.Sprintf("Couldn't join cluster due to not_reachable (%v)\n", err), 1
	}
	return "Done\n", 0
}

// reload re-reads the config and rebinds the ports, like `vernemq restart`.
func (s *server) reload() error {
	cfg, err := loadConfig(s.cfgPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.close()
	}
	if cfg.nodename != s.cfg.nodename {
		s.peers = map[string]*peer{} // a new node has an empty history
	}
	cfg.control = s.cfg.control // the socket stays where the CLI finds it
	s.cfg = cfg
	s.startListeners()
	return nil
}
