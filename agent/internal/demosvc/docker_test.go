package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine/enginetest"

	"github.com/pullship/pullship/agent/cluster"
)

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// demoImage builds a FROM-scratch image holding this binary as
// /usr/sbin/demosvc with vernemq and vmq-admin symlinks, as `make demo` does.
func demoImage(t *testing.T) string {
	t.Helper()
	const tag = "pullship-test-demosvc:latest"
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "demosvc"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build demosvc: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "demosvc"))
	if err != nil {
		t.Fatal(err)
	}
	return enginetest.Load(t, tag, enginetest.Image{
		Files: []enginetest.File{
			{Name: "tmp", Mode: 0o1777, Dir: true},
			{Name: "etc/vernemq", Mode: 0o755, Dir: true},
			{Name: "usr/sbin/demosvc", Mode: 0o755, Data: bin},
			{Name: "usr/sbin/vernemq", Mode: 0o777, Link: "demosvc"},
			{Name: "usr/sbin/vmq-admin", Mode: 0o777, Link: "demosvc"},
		},
		Entrypoint: []string{"/usr/sbin/demosvc"},
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
	})
}

// TestContainersClusterAndNetsplit runs two demo nodes in containers on a
// user-defined network, joins them with `docker exec vmq-admin`, then cuts
// one off the network: the other sees it Running=false.
func TestContainersClusterAndNetsplit(t *testing.T) {
	enginetest.RequireDocker(t)
	image := demoImage(t)
	id := time.Now().UnixNano()
	network := fmt.Sprintf("pullship-demosvc-%d", id)
	docker(t, "network", "create", "--subnet", "10.231.9.0/24", network)
	t.Cleanup(func() { exec.Command("docker", "network", "rm", network).Run() })
	names := map[int]string{}
	for _, i := range []int{11, 12} { // .1 is the network's gateway
		dir := t.TempDir()
		conf := fmt.Sprintf("nodename = VerneMQ@10.231.9.%d\nlistener.vmq.clustering = 10.231.9.%d:44053\ndemo.heartbeat = 200ms\n", i, i)
		if err := os.WriteFile(filepath.Join(dir, "vernemq.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		names[i] = fmt.Sprintf("pullship-demosvc-%d-%d", id, i)
		name := names[i]
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
		docker(t, "run", "-d", "--name", names[i], "--network", network, "--ip", fmt.Sprintf("10.231.9.%d", i),
			"-v", dir+":/etc/vernemq:ro", image)
	}
	waitExec := func(c, want string, args ...string) {
		t.Helper()
		var out []byte
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			out, _ = exec.Command("docker", append([]string{"exec", c}, args...)...).CombinedOutput()
			if string(out) == want {
				return
			}
		}
		t.Fatalf("docker exec %s %v: %q, want %q", c, args, out, want)
	}
	waitExec(names[11], "pong\n", "vernemq", "ping")
	waitExec(names[12], "pong\n", "vernemq", "ping")
	waitExec(names[12], "Done\n", "vmq-admin", "cluster", "join", "discovery-node=VerneMQ@10.231.9.11")

	want := []cluster.Member{{Node: "VerneMQ@10.231.9.11", Running: true}, {Node: "VerneMQ@10.231.9.12", Running: true}}
	waitView := func(want []cluster.Member) {
		t.Helper()
		var got []cluster.Member
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			out := docker(t, "exec", names[11], "vmq-admin", "cluster", "show")
			var err error
			if got, err = cluster.Parse(cluster.FormatTable, []byte(out)); err != nil {
				t.Fatalf("cluster show: %v\n%s", err, out)
			}
			if reflect.DeepEqual(got, want) {
				return
			}
		}
		t.Fatalf("view %v, want %v", got, want)
	}
	waitView(want)
	docker(t, "network", "disconnect", network, names[12])
	want[1].Running = false
	waitView(want)
}
