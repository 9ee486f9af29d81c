package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/cluster"
)

// node is one in-process demo server with its config file.
type node struct {
	name, cfgPath, ctl string
	srv                *server
}

// clusterPort picks a free port; every node uses it on its own loopback
// address (127.0.0.N), as every region uses 44053 on its own overlay address.
func clusterPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeConfig(t *testing.T, path string, i, port int, extra string) {
	t.Helper()
	conf := fmt.Sprintf(`# vernemq.conf for the demo
nodename = VerneMQ@127.0.0.%d
listener.vmq.clustering = 127.0.0.%d:%d
listener.tcp.default = 127.0.0.%d:0
allow_anonymous = off
demo.heartbeat = 50ms
demo.control = %s
%s`, i, i, port, i, filepath.Join(filepath.Dir(path), "ctl.sock"), extra)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func startNode(t *testing.T, i, port int, extra string) *node {
	t.Helper()
	dir, err := os.MkdirTemp("", "demosvc") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &node{name: fmt.Sprintf("VerneMQ@127.0.0.%d", i), cfgPath: filepath.Join(dir, "vernemq.conf"), ctl: filepath.Join(dir, "ctl.sock")}
	writeConfig(t, n.cfgPath, i, port, extra)
	if n.srv, err = newServer(n.cfgPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	n.srv.mu.Lock()
	ls := n.srv.listeners
	n.srv.mu.Unlock()
	for _, l := range ls {
		boundAddr(t, l) // binding is asynchronous; a join right away would race it
	}
	return n
}

// boundAddr polls until l is listening and returns its address.
func boundAddr(t *testing.T, l *retryListener) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		ln := l.ln
		l.mu.Unlock()
		if ln != nil {
			return ln.Addr().String()
		}
	}
	t.Fatal("listener not bound within 5s")
	return ""
}

func (n *node) stop() {
	if n.srv != nil {
		n.srv.close()
		n.srv = nil
	}
}

// run runs the CLI as the container's exec would, under the given name.
func (n *node) run(name string, args ...string) (string, int) {
	env := map[string]string{"DEMOSVC_CONFIG": n.cfgPath, "DEMOSVC_CONTROL": n.ctl}
	var out, errOut bytes.Buffer
	code := runCLI(name, args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String() + errOut.String(), code
}

func (n *node) view(t *testing.T, json bool) []cluster.Member {
	t.Helper()
	args := []string{"cluster", "show"}
	if json {
		args = append(args, "--format=json")
	}
	out, code := n.run("vmq-admin", args...)
	if code != 0 {
		t.Fatalf("%s: cluster show: exit %d: %s", n.name, code, out)
	}
	ms, err := cluster.Parse(cluster.FormatAuto, []byte(out))
	if err != nil {
		t.Fatalf("%s: cluster show output does not parse: %v\n%s", n.name, err, out)
	}
	return ms
}

// waitView polls until n's view equals want.
func (n *node) waitView(t *testing.T, want []cluster.Member) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got []cluster.Member
	for time.Now().Before(deadline) {
		if got = n.view(t, len(got)%2 == 0); reflect.DeepEqual(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: view %v, want %v", n.name, got, want)
}

func TestClusterJoinChainAndNetsplit(t *testing.T) {
	port := clusterPort(t)
	n1, n2, n3 := startNode(t, 1, port, ""), startNode(t, 2, port, ""), startNode(t, 3, port, "")
	n1.waitView(t, []cluster.Member{{Node: n1.name, Running: true}})

	if out, code := n2.run("vmq-admin", "cluster", "join", "discovery-node="+n1.name); code != 0 || out != "Done\n" {
		t.Fatalf("join 2→1: exit %d: %q", code, out)
	}
	if out, code := n3.run("demosvc", "vmq-admin", "cluster", "join", "discovery-node="+n2.name); code != 0 || out != "Done\n" {
		t.Fatalf("join 3→2: exit %d: %q", code, out)
	}
	all := []cluster.Member{{Node: n1.name, Running: true}, {Node: n2.name, Running: true}, {Node: n3.name, Running: true}}
	for _, n := range []*node{n1, n2, n3} {
		n.waitView(t, all) // gossip: 1 and 3 learn each other through 2
	}

	n3.stop()
	split := []cluster.Member{{Node: n1.name, Running: true}, {Node: n2.name, Running: true}, {Node: n3.name, Running: false}}
	n1.waitView(t, split)
	n2.waitView(t, split)
	if out, code := n3.run("vmq-admin", "cluster", "show"); code != 1 || out != "Node 'VerneMQ@127.0.0.3' not responding to pings.\n" {
		t.Fatalf("show on a stopped node: exit %d: %q", code, out)
	}

	// The node comes back on the same address and is Running again.
	var err error
	if n3.srv, err = newServer(n3.cfgPath); err != nil {
		t.Fatal(err)
	}
	n1.waitView(t, all)
}

func TestJoinFailures(t *testing.T) {
	port := clusterPort(t)
	n1 := startNode(t, 1, port, "")
	out, code := n1.run("vmq-admin", "cluster", "join", "discovery-node=VerneMQ@127.0.0.9")
	if code == 0 || !strings.Contains(out, "not_reachable") {
		t.Fatalf("join unreachable: exit %d: %q", code, out)
	}
	if out, code := n1.run("vmq-admin", "cluster", "join", "discovery-node="+n1.name); code == 0 || !strings.Contains(out, "self_join") {
		t.Fatalf("self join: exit %d: %q", code, out)
	}
	if _, code := n1.run("vmq-admin", "cluster", "frobnicate"); code != 2 {
		t.Fatalf("usage error: exit %d", code)
	}
}

func TestPingHealthAndRestart(t *testing.T) {
	port := clusterPort(t)
	n := startNode(t, 1, port, "")
	if out, code := n.run("vernemq", "ping"); code != 0 || out != "pong\n" {
		t.Fatalf("ping: exit %d: %q", code, out)
	}
	// A bad release: unhealthy after restart with the new config.
	writeConfig(t, n.cfgPath, 1, port, "demo.healthy = off\n")
	if out, code := n.run("vernemq", "restart"); code != 0 {
		t.Fatalf("restart: exit %d: %q", code, out)
	}
	if out, code := n.run("vernemq", "ping"); code != 1 || out != "Node 'VerneMQ@127.0.0.1' not responding to pings.\n" {
		t.Fatalf("unhealthy ping: exit %d: %q", code, out)
	}
	// A broken config is refused and the node keeps running the old one.
	if err := os.WriteFile(n.cfgPath, []byte("nodename VerneMQ@127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := n.run("vernemq", "restart"); code != 1 || !strings.Contains(out, "want key = value") {
		t.Fatalf("restart with bad config: exit %d: %q", code, out)
	}
	writeConfig(t, n.cfgPath, 1, port, "")
	if _, code := n.run("vernemq", "restart"); code != 0 {
		t.Fatal("restart back to healthy failed")
	}
	if out, code := n.run("vernemq", "ping"); code != 0 || out != "pong\n" {
		t.Fatalf("ping after fix: exit %d: %q", code, out)
	}
	// The cluster port answers again after the restart rebound it.
	n.waitView(t, []cluster.Member{{Node: n.name, Running: true}})
	n.stop()
	if out, code := n.run("vernemq", "ping"); code != 1 || !strings.Contains(out, "not responding to pings") {
		t.Fatalf("ping with server down: exit %d: %q", code, out)
	}
}

func TestMQTTPortAnswers(t *testing.T) {
	n := startNode(t, 1, clusterPort(t), "")
	n.srv.mu.Lock()
	l := n.srv.listeners[1]
	n.srv.mu.Unlock()
	c, err := net.Dial("tcp", boundAddr(t, l))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "demosvc VerneMQ@127.0.0.1\n" {
		t.Fatalf("got %q, %v", line, err)
	}
}

func TestOutputFormatsMatchSamples(t *testing.T) {
	ms := []member{{"VerneMQ@10.0.11.230", false}, {"VerneMQ@10.0.11.231", true}}
	want, err := os.ReadFile("../../cluster/testdata/vmq-admin-cluster-show.new.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := showTable(ms); got != string(want) {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	ms = []member{{"VerneMQ@10.0.0.1", true}, {"VerneMQ@10.0.0.2", false}}
	want, err = os.ReadFile("../../cluster/testdata/vmq-admin-cluster-show.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := showJSON(ms); got != string(want) {
		t.Fatalf("json %s, want %s", got, want)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ conf, want string }{
		{"nodename = VerneMQ\nlistener.vmq.clustering = 1.2.3.4:44053\n", "not name@host"},
		{"nodename = VerneMQ@x\n", "listener.vmq.clustering"},
		{"nodename = VerneMQ@x\nlistener.vmq.clustering = 1.2.3.4:44053\ndemo.healthy = maybe\n", "demo.healthy"},
		{"= x\n", ":1: want key = value"},
	} {
		p := filepath.Join(dir, "c.conf")
		os.WriteFile(p, []byte(tt.conf), 0o644)
		if _, err := loadConfig(p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.conf, err, tt.want)
		}
	}
}

// callWebhook posts an on_register call to the endpoint's URL; the config
// takes http:// endpoints only.
func TestCallWebhook(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + " " + r.Header.Get("vernemq-hook") + " " + string(b)
	}))
	defer srv.Close()
	callWebhook(srv.URL+"/webhook", "VerneMQ@10.0.0.1", 5*time.Second)
	if s := <-got; s != `POST /webhook on_register {"hook":"on_register","node":"VerneMQ@10.0.0.1"}` {
		t.Fatalf("receiver got %q", s)
	}
	base := "nodename = VerneMQ@10.0.0.1\nlistener.vmq.clustering = 10.0.0.1:44053\n"
	cfg, err := loadConfigText(t, base+"vmq_webhooks.w.endpoint = http://hook-cn:7777/webhook\n")
	if err != nil || cfg.webhook != "http://hook-cn:7777/webhook" {
		t.Fatalf("config webhook %q %v", cfg.webhook, err)
	}
	if _, err := loadConfigText(t, base+"vmq_webhooks.w.endpoint = unix:/run/hook.sock\n"); err == nil || !strings.Contains(err.Error(), "want an http:// URL") {
		t.Fatalf("a unix: endpoint: %v", err)
	}
}

func loadConfigText(t *testing.T, text string) (config, error) {
	p := filepath.Join(t.TempDir(), "vernemq.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadConfig(p)
}
