// Command fakeweave is the test stand-in for the Weave Net `weave` script,
// for hosts where the Weave router cannot run. It implements the subset of
// the CLI pullship drives — ps, attach, detach, status, launch, stop — with
// the real output formats and, above all, the real failure that pullship
// exists to repair: an attached address is lost when the container restarts.
//
// State lives in the directory $WEAVE_FAKE_STATE (one JSON file per
// container). Each attachment records the container's State.StartedAt, read
// with `docker inspect` ($WEAVE_FAKE_DOCKER, default "docker"); when the
// container has restarted since, or is stopped, the address is gone. The
// router is "down" while the file $WEAVE_FAKE_STATE/router-down exists
// (`weave stop` creates it, `weave launch` removes it) or $WEAVE_FAKE_DOWN=1.
//
// With $WEAVE_FAKE_NETNS=1 an attachment is also real: the address is added
// to the container's eth0 inside its network namespace (nsenter + ip), so
// containers on one Docker bridge reach each other on their overlay
// addresses, and a restarted container (a new namespace) really loses it.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

const routerDown = `bridge "weave" not present; did you launch weave?`

// record is one container's attachment state.
type record struct {
	ID        string   `json:"id"`
	StartedAt string   `json:"started_at"`
	Addresses []string `json:"addresses"`
}

// container is what docker inspect says about a container now.
type container struct {
	ID, StartedAt, Pid string
	Running            bool
}

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	dir := os.Getenv("WEAVE_FAKE_STATE")
	if dir == "" {
		return 1, errors.New("fakeweave: WEAVE_FAKE_STATE is not set")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 1, err
	}
	// One command at a time, like weave's own lock around IPAM.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return 1, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return 1, err
	}
	if len(args) == 0 {
		return 1, cliMsg("Usage: weave <command> ...")
	}
	s := state{dir: dir}
	switch args[0] {
	case "launch":
		return 0, ignoreMissing(os.Remove(filepath.Join(dir, "router-down")))
	case "stop":
		return 0, os.WriteFile(filepath.Join(dir, "router-down"), nil, 0o644)
	}
	if s.down() {
		if args[0] == "status" {
			return 1, cliMsg("weave container is not present. Have you launched it?")
		}
		return 1, cliMsg(routerDown)
	}
	switch args[0] {
	case "ps":
		return s.ps(args[1:])
	case "attach":
		return s.attach(args[1:])
	case "detach":
		return s.detach(args[1:])
	case "status":
		return s.status(args[1:])
	}
	return 1, fmt.Errorf("fakeweave: unsupported command %q", args[0])
}

type state struct{ dir string }

// cliMsg is an error printed verbatim: the real weave's messages, which
// callers match on.
type cliMsg string

func (m cliMsg) Error() string { return string(m) }

func (s state) down() bool {
	if os.Getenv("WEAVE_FAKE_DOWN") == "1" {
		return true
	}
	_, err := os.Stat(filepath.Join(s.dir, "router-down"))
	return err == nil
}

// inspect asks Docker about a container; ok=false when it does not exist.
func inspect(name string) (container, bool, error) {
	docker := os.Getenv("WEAVE_FAKE_DOCKER")
	if docker == "" {
		docker = "docker"
	}
	out, err := exec.Command(docker, "inspect", "-f", "{{.State.StartedAt}} {{.State.Running}} {{.Id}} {{.State.Pid}}", "--type", "container", "--", name).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(ee.Stderr), "No such") {
			return container{}, false, nil
		}
		return container{}, false, fmt.Errorf("docker inspect %s: %v", name, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 {
		return container{}, false, fmt.Errorf("docker inspect %s: unexpected output %q", name, out)
	}
	return container{StartedAt: f[0], Running: f[1] == "true", ID: f[2], Pid: f[3]}, true, nil
}

func (s state) path(id string) string { return filepath.Join(s.dir, id+".json") }

// load returns the container's live addresses, forgetting them when the
// container restarted or stopped since they were attached.
func (s state) load(c container) (record, error) {
	r := record{ID: c.ID, StartedAt: c.StartedAt}
	b, err := os.ReadFile(s.path(c.ID))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	var old record
	if err := json.Unmarshal(b, &old); err != nil {
		return r, fmt.Errorf("fakeweave: state %s: %v", s.path(c.ID), err)
	}
	if c.Running && old.StartedAt == c.StartedAt {
		r.Addresses = old.Addresses
	}
	return r, nil
}

func (s state) save(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := s.path(r.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(r.ID))
}

// mac derives a stable locally administered MAC from the container id.
func mac(id string) string {
	h := sha256.Sum256([]byte(id))
	h[0] = h[0]&0xfe | 0x02
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4], h[5])
}

// ps prints `<id12> <mac> [<cidr>...]` for each running container weave
// knows (every recorded one when no names are given); nothing for stopped
// or unknown containers.
func (s state) ps(names []string) (int, error) {
	if len(names) == 0 {
		ents, err := os.ReadDir(s.dir)
		if err != nil {
			return 1, err
		}
		for _, e := range ents {
			if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
				names = append(names, id)
			}
		}
		sort.Strings(names)
	}
	for _, n := range names {
		c, ok, err := inspect(n)
		if err != nil {
			return 1, err
		}
		if !ok || !c.Running {
			continue
		}
		r, err := s.load(c)
		if err != nil {
			return 1, err
		}
		if _, err := os.Stat(s.path(c.ID)); err != nil {
			continue // never on the weave network
		}
		fmt.Println(strings.TrimSpace(c.ID[:12] + " " + mac(c.ID) + " " + strings.Join(r.Addresses, " ")))
	}
	return 0, nil
}

// parseArgs splits `[<cidr>...] <container>`.
func parseArgs(cmd string, args []string) ([]string, string, error) {
	if len(args) == 0 {
		return nil, "", cliMsg("Usage: weave " + cmd + " [<addr>...] <container_id>")
	}
	cidrs := args[:len(args)-1]
	for _, c := range cidrs {
		c = strings.TrimPrefix(c, "ip:")
		if _, err := netip.ParsePrefix(c); err != nil {
			return nil, "", cliMsg("invalid CIDR: " + c)
		}
	}
	return cidrs, args[len(args)-1], nil
}

func (s state) running(name string) (container, error) {
	c, ok, err := inspect(name)
	if err != nil {
		return c, err
	}
	if !ok {
		return c, cliMsg("Error: No such container: " + name)
	}
	if !c.Running {
		return c, cliMsg("container " + c.ID[:12] + " not running")
	}
	return c, nil
}

// attach adds the addresses and prints every attached address without
// prefix, like weave.
func (s state) attach(args []string) (int, error) {
	cidrs, name, err := parseArgs("attach", args)
	if err != nil {
		return 1, err
	}
	if len(cidrs) == 0 {
		return 1, errors.New("fakeweave: attach without an address (IPAM) is not supported")
	}
	c, err := s.running(name)
	if err != nil {
		return 1, err
	}
	r, err := s.load(c)
	if err != nil {
		return 1, err
	}
	for _, cidr := range cidrs {
		p := netip.MustParsePrefix(strings.TrimPrefix(cidr, "ip:"))
		if !contains(r.Addresses, p.String()) {
			if err := netnsAddr(c, "add", p); err != nil {
				return 1, err
			}
			r.Addresses = append(r.Addresses, p.String())
		}
	}
	if err := s.save(r); err != nil {
		return 1, err
	}
	printAddrs(r.Addresses)
	return 0, nil
}

// detach removes the given addresses (all when none given) and prints them.
func (s state) detach(args []string) (int, error) {
	cidrs, name, err := parseArgs("detach", args)
	if err != nil {
		return 1, err
	}
	c, err := s.running(name)
	if err != nil {
		return 1, err
	}
	r, err := s.load(c)
	if err != nil {
		return 1, err
	}
	var keep, gone []string
	for _, a := range r.Addresses {
		drop := len(cidrs) == 0
		for _, cidr := range cidrs {
			drop = drop || netip.MustParsePrefix(strings.TrimPrefix(cidr, "ip:")).String() == a
		}
		if drop {
			if err := netnsAddr(c, "del", netip.MustParsePrefix(a)); err != nil {
				return 1, err
			}
			gone = append(gone, a)
		} else {
			keep = append(keep, a)
		}
	}
	r.Addresses = keep
	if err := s.save(r); err != nil {
		return 1, err
	}
	printAddrs(gone)
	return 0, nil
}

func printAddrs(cidrs []string) {
	var ips []string
	for _, c := range cidrs {
		ips = append(ips, netip.MustParsePrefix(c).Addr().String())
	}
	if len(ips) > 0 {
		fmt.Println(strings.Join(ips, " "))
	}
}

func (s state) status(args []string) (int, error) {
	host, _ := os.Hostname()
	if len(args) > 0 && args[0] == "peers" {
		fmt.Printf("%s(%s)\n", mac(host), host)
		return 0, nil
	}
	fmt.Printf("\n        Version: 2.8.1 (fake)\n\n        Service: router\n       Protocol: weave 1..2\n           Name: %s(%s)\n          Peers: 1\n", mac(host), host)
	return 0, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ignoreMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// netnsAddr adds or deletes p on the container's eth0 when
// $WEAVE_FAKE_NETNS=1.
func netnsAddr(c container, op string, p netip.Prefix) error {
	if os.Getenv("WEAVE_FAKE_NETNS") != "1" {
		return nil
	}
	out, err := exec.Command("nsenter", "-t", c.Pid, "-n", "ip", "addr", op, p.String(), "dev", "eth0").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "File exists") {
		return fmt.Errorf("fakeweave: ip addr %s %s in container %s: %v: %s", op, p, c.ID, err, strings.TrimSpace(string(out)))
	}
	return nil
}
