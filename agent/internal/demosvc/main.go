// Command demosvc stands in for VerneMQ in pullship's tests and `make demo`:
// one static binary that is the container's main process (server mode) and,
// under the names `vernemq` and `vmq-admin` (symlinks or copies in the
// image, or the first argument), the admin CLI the agent execs:
//
//	vernemq ping                     pong, or "Node '…' not responding to pings." exit 1
//	vernemq restart                  re-read the config file (like the seed image)
//	vernemq console                  run the server in the foreground
//	vmq-admin cluster show [--format=json]
//	vmq-admin cluster join discovery-node=VerneMQ@10.0.0.2
//
// Membership is real: nodes exchange heartbeats over TCP on the clustering
// port, and a peer is Running when it answered recently, so a netsplit or
// a lost overlay address shows as Running=false. Joins gossip the member
// list, so a chain of joins forms one cluster. The CLI talks to the server
// over a unix control socket.
//
// Config (key = value, as vernemq.conf; other keys are ignored):
//
//	nodename = VerneMQ@10.0.0.1               required
//	listener.vmq.clustering = 10.0.0.1:44053  required; bound once the address exists
//	listener.tcp.default = 0.0.0.0:1883       MQTT-ish port: answers one line
//	demo.healthy = on                         off: ping fails (a bad release)
//	demo.heartbeat = 1s                       heartbeat period; Running = seen within 3
//	demo.control = /tmp/demosvc.sock          control socket
//	vmq_webhooks.NAME.endpoint = http://hook:7777/webhook
//	                                          each heartbeat posts on_register there
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const defaultConfig = "/etc/vernemq/vernemq.conf"

func main() {
	os.Exit(runCLI(filepath.Base(os.Args[0]), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// runCLI dispatches on the program name, or on the first argument when the
// binary runs under its own name.
func runCLI(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if name != "vernemq" && name != "vmq-admin" {
		name = "serve"
		if len(args) > 0 && (args[0] == "vernemq" || args[0] == "vmq-admin" || args[0] == "serve") {
			name, args = args[0], args[1:]
		}
	}
	cfgPath := getenv("DEMOSVC_CONFIG")
	if cfgPath == "" {
		cfgPath = defaultConfig
	}
	var cmd []string
	switch {
	case name == "serve" || name == "vernemq" && len(args) == 1 && args[0] == "console":
		fs := flag.NewFlagSet("demosvc", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.StringVar(&cfgPath, "config", cfgPath, "config file")
		if name == "vernemq" {
			args = nil
		}
		if err := fs.Parse(args); err != nil {
			return 2
		}
		return serveMain(cfgPath, stderr)
	case name == "vernemq" && len(args) == 1 && (args[0] == "ping" || args[0] == "restart"):
		cmd = args
	case name == "vmq-admin" && len(args) == 2 && args[0] == "cluster" && args[1] == "show":
		cmd = []string{"show"}
	case name == "vmq-admin" && len(args) == 3 && args[0] == "cluster" && args[1] == "show" && args[2] == "--format=json":
		cmd = []string{"show-json"}
	case name == "vmq-admin" && len(args) == 3 && args[0] == "cluster" && args[1] == "join" && strings.HasPrefix(args[2], "discovery-node="):
		cmd = []string{"join", strings.TrimPrefix(args[2], "discovery-node=")}
	default:
		fmt.Fprintf(stderr, "usage: vernemq ping|restart|console; vmq-admin cluster show [--format=json] | join discovery-node=NODE\n")
		return 2
	}
	// The config names the node (for the error message) and the socket.
	cfg, _ := loadConfig(cfgPath)
	if cfg.nodename == "" {
		cfg.nodename = "VerneMQ@unknown"
	}
	ctl := getenv("DEMOSVC_CONTROL")
	if ctl == "" {
		ctl = cfg.control
	}
	resp, err := call(ctl, cmd)
	if err != nil {
		fmt.Fprintf(stdout, "Node '%s' not responding to pings.\n", cfg.nodename)
		return 1
	}
	io.WriteString(stdout, resp.Out)
	return resp.Code
}

func serveMain(cfgPath string, stderr io.Writer) int {
	s, err := newServer(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "demosvc: %v\n", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	s.close()
	return 0
}

// request and response of the control socket: one JSON line each way.
type response struct {
	Out  string `json:"out"`
	Code int    `json:"code"`
}

func call(socket string, cmd []string) (response, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(c).Encode(cmd); err != nil {
		return response{}, err
	}
	var r response
	err = json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&r)
	return r, err
}

// config is the part of vernemq.conf the demo uses.
type config struct {
	nodename  string
	cluster   string // host:port
	mqtt      string
	healthy   bool
	heartbeat time.Duration
	control   string
	// webhook is a vmq_webhooks.<name>.endpoint, an http:// URL: every
	// heartbeat posts an on_register call there (the demo's webhook
	// receiver, agent/internal/demohook, reached by its container name on
	// the node's Docker network).
	webhook string
}

func loadConfig(path string) (config, error) {
	cfg := config{mqtt: "0.0.0.0:1883", healthy: true, heartbeat: time.Second, control: "/tmp/demosvc.sock"}
	f, err := os.Open(path)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return cfg, fmt.Errorf("config %s:%d: want key = value", path, n)
		}
		switch k {
		case "nodename":
			cfg.nodename = v
		case "listener.vmq.clustering":
			cfg.cluster = v
		case "listener.tcp.default":
			cfg.mqtt = v
		case "demo.control":
			cfg.control = v
		case "demo.healthy":
			if v != "on" && v != "off" {
				return cfg, fmt.Errorf("config %s:%d: demo.healthy is %q, want on or off", path, n, v)
			}
			cfg.healthy = v == "on"
		case "demo.heartbeat":
			if cfg.heartbeat, err = time.ParseDuration(v); err != nil || cfg.heartbeat <= 0 {
				return cfg, fmt.Errorf("config %s:%d: demo.heartbeat is %q, want a duration", path, n, v)
			}
		default:
			if strings.HasPrefix(k, "vmq_webhooks.") && strings.HasSuffix(k, ".endpoint") {
				if u, err := url.Parse(v); err != nil || u.Scheme != "http" || u.Host == "" {
					return cfg, fmt.Errorf("config %s:%d: %s is %q, want an http:// URL", path, n, k, v)
				}
				cfg.webhook = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if _, _, ok := strings.Cut(cfg.nodename, "@"); !ok {
		return cfg, fmt.Errorf("config %s: nodename %q is not name@host", path, cfg.nodename)
	}
	if _, _, err := net.SplitHostPort(cfg.cluster); err != nil {
		return cfg, fmt.Errorf("config %s: listener.vmq.clustering %q: %w", path, cfg.cluster, err)
	}
	return cfg, nil
}

// showTable prints members in the newer vmq-admin table style.
func showTable(ms []member) string {
	w := len("Node")
	for _, m := range ms {
		w = max(w, len(m.Node))
	}
	sep := "+" + strings.Repeat("-", w+2) + "+---------+\n"
	var b strings.Builder
	b.WriteString(sep)
	fmt.Fprintf(&b, "| %-*s | Running |\n", w, "Node")
	b.WriteString(sep)
	for _, m := range ms {
		fmt.Fprintf(&b, "| %-*s | %-7t |\n", w, m.Node, m.Running)
		b.WriteString(sep)
	}
	return b.String()
}

// showJSON prints members like `vmq-admin cluster show --format=json`.
func showJSON(ms []member) string {
	if ms == nil {
		ms = []member{}
	}
	b, _ := json.Marshal(struct {
		Table []member `json:"table"`
		Type  string   `json:"type"`
	}{ms, "table"})
	return string(b)
}

type member struct {
	Node    string `json:"Node"`
	Running bool   `json:"Running"`
}

func sortMembers(ms []member) { sort.Slice(ms, func(i, j int) bool { return ms[i].Node < ms[j].Node }) }
